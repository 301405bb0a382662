"""The reference itself: the interpreter's gradients against central finite differences."""
import numpy as np
import pytest
from conftest import SPECS

from cellc.reference import interpreter
from cellc.passes import split
from cellc.frontend.spec import read_spec


def fd_check(cell, sizes, T=3, B=2, seed=0, tol=1e-6):
    rng = np.random.default_rng(seed)
    params = interpreter.init_params(cell, sizes, seed=seed)
    sizes = {**sizes, "1": 1}              # a width of one
    inputs = {v.name: rng.normal(size=(T, B, sizes[v.dim])) for v in cell.inputs}
    states = {v.name: rng.normal(scale=0.5, size=(B, sizes[v.dim])) for v in cell.states}
    y, final, tape = interpreter.forward(cell, params, inputs, states)
    dy = rng.normal(size=y.shape)
    ds = {k: rng.normal(size=v.shape) for k, v in final.items()}
    dparams, dinputs, dstates = interpreter.backward(cell, tape, dy, ds)

    def loss():
        y, final, _ = interpreter.forward(cell, params, inputs, states)
        return np.sum(y * dy) + sum(np.sum(final[k] * ds[k]) for k in final)

    checked = 0
    for values, grads in ((params, dparams), (inputs, dinputs), (states, dstates)):
        for name, array in values.items():
            for idx in np.ndindex(array.shape):
                old = array[idx]
                array[idx] = old + 1e-6
                up = loss()
                array[idx] = old - 1e-6
                down = loss()
                array[idx] = old
                numeric = (up - down) / 2e-6
                assert abs(numeric - grads[name][idx]) <= tol * max(1.0, abs(numeric)), \
                    f"d{name}{idx}: finite differences {numeric}, interpreter {grads[name][idx]}"
                checked += 1
    return checked


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_interpreter_gradients_match_finite_differences(spec):
    cell = split(read_spec(spec))
    sizes = {"I": 2, "H": 3}
    sizes.update({d: 2 for d in cell.dims if d not in sizes})     # an LSTMP's P
    assert fd_check(cell, sizes) > 20
