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
  s__W_sr[H] = s @ W_sr
  x__W_xr[H] = x @ W_xr
  r[H] = sigmoid(b_r + s__W_sr + x__W_xr)
  s__W_sz[H] = s @ W_sz
  x__W_xz[H] = x @ W_xz
  z[H] = sigmoid(b_z + s__W_sz + x__W_xz)
  x__W_xs[H] = x @ W_xs
  W_ss__in[H] = r*s
  W_ss__in__W_ss[H] = W_ss__in @ W_ss
  u[H] = tanh(W_ss__in__W_ss + b_s + x__W_xs)
  s__new[H] = s*(-z + 1) + u*z
  output s__new"""


def test_schedule_fuses_gemms_by_operand_and_hoists_inputs():
    plan = schedule(split(read_spec(ROOT / "specs" / "gru_cho.toml")))
    static = [[(g.operand, [n.weight for n in g.nodes]) for g in st.gemms] for st in plan.static]
    step = [[(g.operand, [n.weight for n in g.nodes]) for g in st.gemms] for st in plan.step]
    regions = [[[n.name for n in r.nodes] for r in st.regions] for st in plan.step]
    assert static == [[("x", ["W_xr", "W_xz", "W_xs"])]]        # one hoisted input GEMM
    assert step == [[("s", ["W_sr", "W_sz"])], [("W_ss__in", ["W_ss"])]]
    assert regions == [[["r", "z", "W_ss__in"]], [["u", "s__new"]]]   # two fused kernels
