"""Variable-length sequences in one batch (`lengths`): every spec's generated module must
give, for each sequence, exactly what running that sequence alone gives. Padding holds
NaN and the upstream gradient past each end is noise: neither may be read."""
import numpy as np
import pytest
from cellcheck import all_sizes, generated, problem, rel_err
from conftest import SPECS

SIZES = {"I": 3, "H": 4}
T, B = 6, 5
LENGTHS = np.array([3, 6, 0, 1, 6])        # unsorted, with ties, a zero and a full length


@pytest.fixture(params=SPECS, ids=lambda p: p.stem)
def cell(request):
    module, _ = generated(request.param)
    return module


def ragged_problem(module, dtype=np.float64):
    params, inputs, states = problem(module, T=T, B=B, sizes=SIZES, dtype=dtype, seed=3)
    x = {k: v.copy() for k, v in inputs.items()}      # every input: a time stamp `t` too
    for b, n in enumerate(LENGTHS):
        for v in x.values():
            v[n:, b] = np.nan                  # padding must never be read
    rng = np.random.default_rng(4)
    dy = rng.normal(size=(T, B, all_sizes(module, SIZES)[module.OUTPUT_DIM])).astype(dtype)
    ds = {k: rng.normal(size=v.shape).astype(dtype) for k, v in states.items()}
    return params, x, states, dy, ds


def one_by_one(module, params, x, states, dy, ds):
    """Each sequence alone, with T = its length: the reference."""
    ys, finals, grads = [], [], []
    for b, n in enumerate(LENGTHS):
        s = {k: v[b:b + 1] for k, v in states.items()}
        y, final, cache = module.forward(
            params, {k: np.ascontiguousarray(v[:n, b:b + 1]) for k, v in x.items()}, s)
        g = module.backward(cache, np.ascontiguousarray(dy[:n, b:b + 1]),
                            {k: v[b:b + 1] for k, v in ds.items()})
        ys.append(y), finals.append(final), grads.append(g)
    return ys, finals, grads


def test_each_sequence_as_if_alone(cell):
    params, x, states, dy, ds = ragged_problem(cell)
    y, final, cache = cell.forward(params, x, states, lengths=LENGTHS)
    g = cell.backward(cache, dy, ds)
    ys, finals, grads = one_by_one(cell, params, x, states, dy, ds)
    for b, n in enumerate(LENGTHS):
        assert rel_err(y[:n, b], ys[b][:, 0]) < 1e-13
        assert np.all(y[n:, b] == 0)                       # outputs past the end are zero
        for k in states:
            assert rel_err(final[k][b], finals[b][k][0]) < 1e-13
            assert rel_err(g.states[k][b], grads[b].states[k][0]) < 1e-13
        for k in x:
            assert rel_err(g.inputs[k][:n, b], grads[b].inputs[k][:, 0]) < 1e-13
            assert np.all(g.inputs[k][n:, b] == 0)         # no gradient into padding
    for k in params:                                       # parameter gradients add up
        assert rel_err(g.params[k], sum(gb.params[k] for gb in grads)) < 1e-12


def test_zero_length_sequence_keeps_its_state(cell):
    params, x, states, dy, ds = ragged_problem(cell)
    y, final, cache = cell.forward(params, x, states, lengths=LENGTHS)
    g = cell.backward(cache, dy, ds)
    for k in states:
        assert np.array_equal(final[k][2], states[k][2])
        assert np.array_equal(g.states[k][2], ds[k][2])


def test_full_lengths_match_no_lengths(cell):
    params, inputs, states = problem(cell, T=T, B=B, sizes=SIZES, dtype=np.float32, seed=5)
    dy = np.random.default_rng(6).normal(
        size=(T, B, all_sizes(cell, SIZES)[cell.OUTPUT_DIM])).astype(np.float32)
    y0, f0, c0 = cell.forward(params, inputs, states)
    g0 = cell.backward(c0, dy)
    y1, f1, c1 = cell.forward(params, inputs, states, lengths=np.full(B, T))
    g1 = cell.backward(c1, dy)
    assert np.array_equal(y0, y1)
    assert all(np.array_equal(f0[k], f1[k]) for k in f0)
    for a, b in zip(g0, g1):
        assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("lengths, match", [
    (np.array([1, 2]), "lengths must be 5 integers"),
    (np.array([1.0, 2, 3, 4, 5]), "lengths must be 5 integers"),
    (np.array([1, 2, 3, 4, 7]), r"lengths must lie in \[0, T=6\]"),
    (np.array([1, 2, -1, 4, 5]), r"lengths must lie in \[0, T=6\]"),
])
def test_bad_lengths_are_refused(cell, lengths, match):
    params, x, states, _, _ = ragged_problem(cell)
    with pytest.raises(ValueError, match=match):
        cell.forward(params, x, states, lengths=lengths)
