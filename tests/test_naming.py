"""Every made name comes from cellc/naming.py: it reads back, never equals a spec name,
and is bounded in length whatever the spec's names are."""
import ast
from pathlib import Path

import pytest

from cellc import naming
from cellc.driver import compile_bytes
from cellc.frontend.spec import name_problem

ROOT = Path(__file__).resolve().parent.parent


def test_made_names_read_back():
    assert naming.parse(naming.new("h")) == ("new", ("h",))
    assert naming.parse(naming.product(naming.new("h_"), "W")) == ("at", ("new__h_", "W"))
    assert naming.parse(naming.operand("W", 2)) == ("in", ("W", "2"))
    assert naming.parse(naming.adjoint(naming.product("x", "W_xi"))) == ("d", ("at__x__W_xi",))
    assert naming.parse(naming.accumulator(naming.adjoint(naming.reduction("c")))) == \
        ("acc", ("d__sum__c",))
    assert naming.parse("h") is None and naming.parse("W_x_") is None
    assert naming.state_of(naming.new("c")) == "c" and naming.state_of("c") is None


def test_display_and_spec_forms():
    assert naming.display(naming.adjoint(naming.new("h"))) == "∂h′"
    assert naming.display(naming.product("x", "W_xi")) == "x·W_xi"
    assert naming.display(naming.operand("W_ss")) == "in[W_ss]"
    assert naming.display(naming.reduction(naming.reduction_argument(3))) == "Σρ₃"
    assert naming.display(naming.temporary(12)) == "t₁₂"
    assert naming.display(naming.zoneout_mask("c")) == "zoneout[c]"
    assert naming.spec_form("o*tanh(new__c) + new__h") == "o*tanh(c') + h'"
    assert naming.spec_text("h' = o * tanh(c')") == "new__h = o * tanh(new__c)"


@pytest.mark.parametrize("name", ["new__h", "at__x__W", "d__x", "h__new", "x__W", "a__b"])
def test_no_spec_name_looks_made(name):
    assert name_problem(name) is not None


def test_spec_names_are_bounded_and_refused_past_the_bound():
    ok = "w" * naming.MAX_LENGTH
    assert name_problem(ok) is None
    assert "characters long" in name_problem(ok + "w")


def long_spec(n: int) -> bytes:
    """A cell whose every name is n characters long."""
    x, h, W, U, b, I, H = (c * n for c in "xhWUbIH")
    return (f'name = "{"c" * n}"\ninputs = {{{x} = "{I}"}}\nstates = {{{h} = "{H}"}}\n'
            f'parameters = ["{W}", "{U}", "{b}"]\n'
            f'equations = """\n{h}\' = tanh({x} @ {W} + ({h} * {b}) @ {U} + {b})\n"""\n').encode()


def test_function_names_do_not_grow_with_spec_names():
    """Kernels and time loops are named after their place in the plan, never after a
    spec name, so long spec names cannot overflow Numba's cache file names or LLVM's
    symbols; every other made name grows only by a bounded number of prefixes."""
    short = compile_bytes(long_spec(1), "short.toml")
    long = compile_bytes(long_spec(naming.MAX_LENGTH), "long.toml")
    names = lambda irs: sorted(f.name for f in irs.program.functions)
    assert names(short) == names(long)
    assert max(len(n) for n in names(long)) <= 16
    identifiers = {node.id for node in ast.walk(ast.parse(long.source))
                   if isinstance(node, ast.Name)}
    assert max(len(i) for i in identifiers) <= 3 * naming.MAX_LENGTH + 20


def test_every_generated_name_is_a_spec_name_or_made():
    """No name in a generated module is pasted together outside naming.py: each
    identifier in the kernels and drivers is a spec name, a made name that `parse`
    reads, a fixed local of naming.py, or the module's own."""
    irs = compile_bytes((ROOT / "specs" / "ln_lstm.toml").read_bytes(), "ln_lstm.toml")
    cell = irs.cell
    spec = ({v.name for v in cell.inputs + cell.states} | {p.name for p in cell.params}
            | {n.name for n in irs.spec.nodes} | set(cell.dims))
    fixed = {getattr(naming, k) for k in dir(naming) if k.isupper()
             and isinstance(getattr(naming, k), str)} | set(naming.GROUPS.values())
    module_level = naming.code_names()
    body = ast.parse(irs.source[irs.source.index("# ---- this cell"):])
    scoped = {n.id for c in ast.walk(body) if isinstance(c, ast.comprehension)
              for n in ast.walk(c.target) if isinstance(n, ast.Name)}   # cannot meet others
    for node in ast.walk(body):
        if isinstance(node, ast.Name) and node.id not in scoped:
            name = node.id.lstrip("_")
            assert (name in spec or naming.is_made(name) or node.id in fixed
                    or name in module_level), node.id


def test_a_cell_of_the_longest_names_loads_caches_and_runs(tmp_path):
    """Names at the bound, in a variant whose file name also carries the regularizers:
    Numba's cache file names and LLVM's symbols stay within their limits."""
    import numpy as np

    from cellc.runtime.loader import load
    path = tmp_path / "long.toml"
    path.write_bytes(long_spec(naming.MAX_LENGTH))
    n = naming.MAX_LENGTH
    module = load(path, zoneout=["h" * n])
    sizes = {"I" * n: 3, "H" * n: 4}
    params = module.init_params(dtype=np.float32, **sizes)
    inputs = {"x" * n: np.ones((2, 2, 3), np.float32),
              naming.zoneout_mask("h" * n): np.zeros((2, 2, 4), np.float32)}
    y, final, cache = module.forward(params, inputs)
    grads = module.backward(cache, np.ones_like(y))
    assert np.isfinite(y).all() and np.isfinite(grads.params["W" * n]).all()
    cached = list((Path(module.__file__).parent / "__pycache__").glob(
        Path(module.__file__).stem + ".*.nbi"))
    assert cached and max(len(f.name) for f in cached) < 255      # Numba cached them
