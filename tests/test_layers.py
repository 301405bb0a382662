"""cellc.layers.Layer with NumPy alone, for every spec: gradients of stacked,
bidirectional, ragged, dropout layers against finite differences, the sum merge, and
batch_first. (Against torch.nn: tests/test_torch_layers.py.)"""
import numpy as np
import pytest
from cellcheck import all_sizes, generated, layer_directional_check, rel_err
from conftest import ONE_INPUT_SPECS as SPECS

from cellc.layers import Layer

SIZES = {"I": 3, "H": 4}
T, B = 5, 3
LENGTHS = np.array([5, 2, 4])


@pytest.fixture(params=SPECS, ids=lambda p: p.stem)
def cell(request):
    module, _ = generated(request.param)
    return module


def data(layer, seed):
    rng = np.random.default_rng(seed)
    sizes = all_sizes(layer.cell, SIZES)
    params = layer.init_params(np.float64, seed=seed, **sizes)
    x = rng.normal(size=(T, B, sizes["I"]))
    k = layer.num_layers * layer.directions
    states = {s: rng.normal(scale=0.5, size=(k, B, sizes[d])) for s, d in layer.cell.STATES.items()}
    return params, x, states


def test_gradients_match_finite_differences(cell):
    layer = Layer(cell, 2, bidirectional=True, dropout=0.3)
    params, x, states = data(layer, 1)

    def run(p, x, s):
        return layer.forward(p, x, s, LENGTHS, training=True, seed=7)

    numeric, analytic, y, g = layer_directional_check(layer, run, params, x, states)
    assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic))
    for b, n in enumerate(LENGTHS):                       # nothing past each end
        assert np.all(y[n:, b] == 0) and np.all(g.inputs["x"][n:, b] == 0)


def test_sum_merge_adds_the_two_directions(cell):
    joined = Layer(cell, 1, bidirectional=True)
    summed = Layer(cell, 1, bidirectional=True, merge="sum")
    params, x, states = data(joined, 3)
    yj, fj, cj = joined.forward(params, x, states, LENGTHS)
    ys, fs, cs = summed.forward(params, x, states, LENGTHS)
    H = ys.shape[-1]
    assert rel_err(ys, yj[..., :H] + yj[..., H:]) < 1e-14
    dy = np.random.default_rng(4).normal(size=ys.shape)
    gj = joined.backward(cj, np.concatenate([dy, dy], axis=2))
    gs = summed.backward(cs, dy)
    for a, b in zip(gs, gj):
        assert all(rel_err(a[k], b[k]) < 1e-14 for k in a)


def test_batch_first_is_a_transpose(cell):
    tm = Layer(cell, 2, bidirectional=True)
    bf = Layer(cell, 2, bidirectional=True, batch_first=True)
    params, x, states = data(tm, 5)
    y1, f1, c1 = tm.forward(params, x, states, LENGTHS)
    y2, f2, c2 = bf.forward(params, np.ascontiguousarray(x.swapaxes(0, 1)), states, LENGTHS)
    assert np.array_equal(y1, y2.swapaxes(0, 1))
    dy = np.random.default_rng(6).normal(size=y1.shape)
    g1 = tm.backward(c1, dy)
    g2 = bf.backward(c2, np.ascontiguousarray(dy.swapaxes(0, 1)))
    assert np.array_equal(g1.inputs["x"], g2.inputs["x"].swapaxes(0, 1))


def test_bad_arguments_are_refused(cell):
    with pytest.raises(ValueError, match="num_layers"):
        Layer(cell, 0)
    with pytest.raises(ValueError, match="merge"):
        Layer(cell, merge="mean")
    with pytest.raises(ValueError, match="dropout"):
        Layer(cell, dropout=1.0)
    layer = Layer(cell, 2)
    params, x, states = data(layer, 7)
    with pytest.raises(ValueError, match="initial states must be"):
        layer.forward(params, x, {k: v[:1] for k, v in states.items()})
    with pytest.raises(ValueError, match="lengths must be 3 integers"):
        layer.forward(params, x, states, lengths=[1, 2])


def _several_input_specs():
    from conftest import SPECS as ALL
    return [s for s in ALL if s not in SPECS]


@pytest.mark.parametrize("path", _several_input_specs(), ids=lambda p: p.stem)
def test_a_cell_of_several_inputs_stacks_and_reverses_every_input(path):
    """A time stamp beside x: every layer and direction reads it (reversed with the
    sequence); its gradient sums theirs. Directional derivative against finite
    differences, in every parameter and input at once."""
    module, _ = generated(path)
    layer = Layer(module, 2, bidirectional=True, dropout=0.3)
    assert layer.extra_inputs
    rng = np.random.default_rng(5)
    sizes = all_sizes(module, SIZES)
    params = layer.init_params(np.float64, seed=5, **sizes)
    inputs = {k: rng.normal(size=(T, B, 1 if d == "1" else sizes[d]))
              for k, d in module.INPUTS.items()}
    w = rng.normal(size=(T, B, layer.directions * sizes[module.OUTPUT_DIM]))

    def loss(p, xs):
        y, _, cache = layer.forward(p, xs, None, LENGTHS, training=True, seed=3)
        return float((y * w).sum()), cache, y

    value, cache, y = loss(params, inputs)
    g = layer.backward(cache, w)
    assert set(g.inputs) == set(module.INPUTS)
    dp = {k: rng.normal(size=np.shape(v)) for k, v in params.items()}
    dx = {k: rng.normal(size=v.shape) for k, v in inputs.items()}
    analytic = sum((g.params[k] * dp[k]).sum() for k in dp) + sum(
        (g.inputs[k] * dx[k]).sum() for k in dx)
    eps = 1e-6
    up = loss({k: v + eps * dp[k] for k, v in params.items()},
              {k: v + eps * dx[k] for k, v in inputs.items()})[0]
    down = loss({k: v - eps * dp[k] for k, v in params.items()},
                {k: v - eps * dx[k] for k, v in inputs.items()})[0]
    numeric = (up - down) / (2 * eps)
    assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic))
    with pytest.raises(ValueError, match="pass a dict"):
        layer.forward(params, inputs[layer.input])
