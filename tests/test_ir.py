"""The IR and its passes, checked as text: what the split pass makes of Cho's GRU
(a GEMM between two elementwise stages) and how the schedule fuses it."""
from conftest import ROOT

from cellc.ir.cell import format_cell
from cellc.passes import schedule, split
from cellc.frontend.spec import read_spec


def test_split_ir_of_cho_gru_is_exactly_this():
    assert format_cell(split(read_spec(ROOT / "specs" / "gru_cho.toml"))) == """\
cell gru_cho
  inputs  x[I]
  states  s[H]
  params  W_xr[I,H], W_sr[H,H], b_r[H], W_xz[I,H], W_sz[H,H], b_z[H], W_xs[I,H], W_ss[H,H], b_s[H]
  at__s__W_sr[H] = s @ W_sr
  at__x__W_xr[H] = x @ W_xr
  r[H] = sigmoid(at__s__W_sr + at__x__W_xr + b_r)
  at__s__W_sz[H] = s @ W_sz
  at__x__W_xz[H] = x @ W_xz
  z[H] = sigmoid(at__s__W_sz + at__x__W_xz + b_z)
  at__x__W_xs[H] = x @ W_xs
  in__W_ss[H] = r*s
  at__in__W_ss__W_ss[H] = in__W_ss @ W_ss
  u[H] = tanh(at__in__W_ss__W_ss + at__x__W_xs + b_s)
  new__s[H] = s*(-z + 1) + u*z
  output new__s"""


def test_schedule_fuses_gemms_by_operand_and_hoists_inputs():
    plan = schedule(split(read_spec(ROOT / "specs" / "gru_cho.toml")))
    static = [[(g.operand, [n.weight for n in g.nodes]) for g in st.gemms] for st in plan.static]
    step = [[(g.operand, [n.weight for n in g.nodes]) for g in st.gemms] for st in plan.step]
    regions = [[[n.name for n in r.nodes] for r in st.regions] for st in plan.step]
    assert static == [[("x", ["W_xr", "W_xz", "W_xs"])]]        # one hoisted input GEMM
    assert step == [[("s", ["W_sr", "W_sz"])], [("in__W_ss", ["W_ss"])]]
    assert regions == [[["r", "z", "in__W_ss"]], [["u", "new__s"]]]   # two fused kernels
