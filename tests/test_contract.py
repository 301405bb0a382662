"""The generated module's contract: metadata, init_params, and ValueError on bad input
before any kernel runs (Numba does no bounds checking)."""
import numpy as np
import pytest
from cellcheck import all_sizes, generated, problem
from conftest import SPECS

SIZES = {"I": 3, "H": 4}


@pytest.fixture(params=SPECS, ids=lambda p: p.stem)
def cell(request):
    module, _ = generated(request.param)
    params, inputs, states = problem(module, T=4, B=2, sizes=SIZES, dtype=np.float32, seed=0)
    return module, params, inputs["x"], states


def test_metadata(cell):
    module, params, x, states = cell
    sizes = all_sizes(module, SIZES)
    assert module.INPUTS == {"x": "I"}
    assert list(module.STATES) and "H" in set(module.STATES.values())
    assert module.OUTPUT_DIM == module.STATES[next(iter(module.STATES))]
    assert list(module.PARAMS) == list(params)
    assert set(module.DIMS) == {d for shape in module.PARAMS.values() for d in shape}
    for name, shape in module.PARAMS.items():
        assert params[name].shape == tuple(sizes[d] for d in shape)
        assert params[name].dtype == np.float32


def test_init_params_is_seeded_and_honours_init_table(cell):
    module, *_ = cell
    sizes = all_sizes(module, SIZES)
    a = module.init_params(seed=3, **sizes)
    b = module.init_params(seed=3, **sizes)
    c = module.init_params(seed=4, **sizes)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)
    for name, (kind, args) in module.INIT.items():
        if kind == "constant":
            assert np.all(a[name] == args[0])
    bound = 1 / np.sqrt(SIZES["H"])
    for name in module.PARAMS:
        if name not in module.INIT:
            assert np.all(np.abs(a[name]) <= bound)
    with pytest.raises(ValueError, match="missing"):
        module.init_params(I=3)
    with pytest.raises(ValueError, match="dtype"):
        module.init_params(dtype=np.int32, **sizes)


def bad_calls(module, params, x, states):
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    extra = dict(params, junk=np.zeros(3, np.float32))
    missing = dict(params)
    missing.pop(next(iter(missing)))
    wrong_shape = dict(params)
    k = next(iter(wrong_shape))
    wrong_shape[k] = np.zeros(tuple(n + 1 for n in params[k].shape), np.float32)
    h = next(iter(states))
    return [
        ("missing", (missing, x, states)),
        ("unexpected", (extra, x, states)),
        ("size", (wrong_shape, x, states)),
        ("dtype", (p64, x, states)),
        ("dtype", (params, x.astype(np.float64), states)),
        ("dtype", (params, x.astype(np.int64), states)),
        ("dtype", (params, x.astype(">f4"), states)),
        ("dimensions", (params, x[0], states)),
        ("size I", (params, x[..., :2].copy(), states)),
        ("C-contiguous", (params, np.asfortranarray(x), states)),
        ("C-contiguous", (params, x[::2], states)),
        ("numpy array", (params, x.tolist(), states)),
        ("batch size", (params, x, dict(states, **{h: states[h][:1].copy()}))),
        (f"size {module.STATES[h]}", (params, x, dict(states, **{h: np.zeros((2, 7), np.float32)}))),
        ("unknown states", (params, x, dict(states, bogus=states[h]))),
        ("params must be a dict", ([1, 2], x, states)),
    ]


def test_bad_forward_arguments_raise_value_error(cell):
    module, params, x, states = cell
    for message, args in bad_calls(module, params, x, states):
        with pytest.raises(ValueError, match=message):
            module.forward(*args)


def test_bad_backward_arguments_raise_value_error(cell):
    module, params, x, states = cell
    y, final, cache = module.forward(params, x, states)
    with pytest.raises(ValueError, match="shape"):
        module.backward(cache, np.zeros((1, 2, 4), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        module.backward(cache, np.zeros(y.shape, np.float64))
    with pytest.raises(ValueError, match="unknown keys"):
        module.backward(cache, None, {"bogus": np.zeros((2, 4), np.float32)})
    h = next(iter(final))
    with pytest.raises(ValueError, match="shape"):
        module.backward(cache, None, {h: np.zeros((3, 4), np.float32)})


def test_omitted_upstream_gradients_are_zero(cell):
    module, params, x, states = cell
    _, _, cache = module.forward(params, x, states)
    grads = module.backward(cache)
    for group in grads:
        assert all(np.all(g == 0) for g in group.values())
