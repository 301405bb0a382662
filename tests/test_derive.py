"""The symbolic derivation on small cells: exact adjoints, saved activations reused,
reductions as loops with sums over the units, and the order backward writes adjoints in
(a kernel reading a scalar another kernel of its stage made runs after it forward and
before it backward)."""
import sympy

from cellc import naming
from cellc.backend.kernels import backward_writes
from cellc.backend.storage import Storage
from cellc.driver import compile_bytes
from cellc.ir.cell import size_symbol, symbol
from cellc.runtime.regularizers import Regularizers


def derive(equations: str, params: list, inputs: str = '["x"]', regularizers=Regularizers()):
    quoted = ", ".join(f'"{p}"' for p in params)
    text = (f'name = "cell"\ninputs = {inputs}\nstates = ["h"]\nparameters = [{quoted}]\n'
            f'equations = """\n{equations}\n"""\n')
    return compile_bytes(text.encode(), "cell.toml", regularizers)


d = lambda name: symbol(naming.adjoint(name))
new_h = symbol(naming.new("h"))


def test_sigmoid_reuses_its_saved_output():
    irs = derive("h' = sigmoid(x @ W + h @ U)", ["W", "U"])
    (grad,) = irs.derivation.grads.values()
    (loop,) = grad.loops
    (t0, e0), = loop.temps
    assert e0 == d(naming.new("h")) * new_h * (1 - new_h)
    assert dict(grad.grads) == {naming.product("x", "W"): symbol(t0),
                                naming.product("h", "U"): symbol(t0)}
    assert grad.reads == (naming.new("h"),)           # what forward saves for it


def test_tanh_and_a_product_of_values():
    irs = derive("g = tanh(h @ U)\nh' = g * x", ["U"], inputs='{x = "H"}')
    (grad,) = irs.derivation.grads.values()
    g, x = symbol("g"), symbol("x")
    grads = {k: v.subs(dict((symbol(t), e) for t, e in grad.loops[0].temps))
             for k, v in grad.grads}
    assert sympy.simplify(grads["x"] - d(naming.new("h")) * g) == 0
    assert sympy.simplify(grads[naming.product("h", "U")]
                          - d(naming.new("h")) * x * (1 - g ** 2)) == 0


def test_a_mean_is_a_sum_over_the_units_of_the_row():
    """y = a - mean(a): da_k = dy_k - sum_j dy_j / |H|, in two loops over the units."""
    irs = derive("a = h @ U\nh' = a - mean(a)", ["U"])
    (grad,) = irs.derivation.grads.values()
    total = naming.reduction("a")
    assert grad.levels == {total: 1, naming.new("h"): 1}
    top, bottom = grad.loops
    assert (top.level, bottom.level) == (1, 0)
    acc = naming.accumulator(naming.adjoint(total))
    assert top.sums == ((acc, -d(naming.new("h")) / size_symbol("H")),)
    assert top.scalars == ((naming.adjoint(total), symbol(acc)),)
    assert dict(grad.grads) == {"a": d(naming.new("h")) + d(total)}


def test_masks_get_no_adjoint():
    irs = derive("h' = tanh(x @ W + h @ U)", ["W", "U"],
                 regularizers=Regularizers.of(zoneout=["h"]))
    for grad in irs.derivation.grads.values():
        assert naming.zoneout_mask("h") not in dict(grad.grads)


def test_a_sum_over_one_width_feeding_another_runs_in_rounds():
    """h' = tanh(h @ U) + sum(x * (h @ V)): the I-wide kernel makes the sum the H-wide
    kernel reads, so forward runs I then H, and backward H then I."""
    irs = derive("h' = tanh(h @ U) + sum(x * (h @ V))", ["U", "V"])
    (stage,) = irs.plan.step
    assert [(r.name, r.dim) for r in stage.regions] == [("step1", "I"), ("step1b", "H")]
    writes = backward_writes(irs.derivation, Storage(irs.derivation))
    kernels = [w[2] for w, _ in writes.order if w[1] == "kernel"]
    assert kernels == ["step1b", "step1"]
    sum_arg = naming.reduction(naming.reduction_argument(1))
    assert sum_arg in writes.before(("step", "kernel", "step1"))     # its seed is written
