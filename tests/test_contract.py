"""The generated module's contract: metadata, init_params, and ValueError on bad input
before any kernel runs (Numba does no bounds checking)."""
import numpy as np
import pytest
from cellcheck import all_sizes, generated, problem
from conftest import ONE_INPUT_SPECS as SPECS

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
    assert module.OUTPUT_DIM in module.DIMS         # a state's, or another (scrn's Q)
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
        # torch-style or malformed containers
        ("states must be a dict", (params, x, tuple(states.values()))),
        ("states must be a dict", (params, x, list(states.values()))),
        ("inputs must have keys", (params, {1: x}, states)),
        ("inputs must have keys", (params, {"x": x, 1: x}, states)),
        ("size .* is 0", ({k: v[..., :0] if v.ndim == 2 else v for k, v in params.items()},
                          x, states)),
        ("size I is 0", (params, x[..., :0], states)),
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


def test_bad_init_params_arguments_raise_value_error(cell):
    module, *_ = cell
    sizes = all_sizes(module, SIZES)
    for bad in (2.7, "3", True, 0, -1, None, np.float32(3)):
        with pytest.raises(ValueError, match="positive integer"):
            module.init_params(**dict(sizes, I=bad))
    with pytest.raises(ValueError, match="seed"):
        module.init_params(seed=-1, **sizes)
    with pytest.raises(ValueError, match="seed"):
        module.init_params(seed="a", **sizes)
    for dtype in ("no such dtype", int, np.float16):
        with pytest.raises(ValueError, match="float32 or float64"):
            module.init_params(dtype, **sizes)
    assert module.init_params(seed=np.int64(2), **dict(sizes, I=np.int32(3)))


def test_strides_numpy_calls_contiguous_are_made_compact(cell):
    """A [1, n] row with a row stride of 0 or 4000 (a broadcast, an H=1 view) is
    C-contiguous to numpy; BLAS refused such a leading dimension and left its output
    uninitialised. Every argument now reaches BLAS and the kernels compact."""
    module, params, x, states = cell
    sizes = all_sizes(module, dict(SIZES, I=1))
    one_row = module.init_params(**sizes)
    x1 = np.ascontiguousarray(x[..., :1])
    for stride in (0, 4000):
        odd = {k: np.lib.stride_tricks.as_strided(v, v.shape, (stride, v.strides[1]))
               if v.ndim == 2 and v.shape[0] == 1 else v for k, v in one_row.items()}
        assert any(v.ndim == 2 and v.strides[0] == stride for v in odd.values())
        y, final, cache = module.forward(odd, x1, states)
        want, want_final, want_cache = module.forward(one_row, x1, states)
        np.testing.assert_array_equal(y, want)
        g, want_g = module.backward(cache, np.ones_like(y)), module.backward(want_cache, np.ones_like(y))
        for k in want_g.params:
            np.testing.assert_array_equal(g.params[k], want_g.params[k])


def test_forward_keeps_copies_of_what_backward_reads(cell):
    """Editing the inputs or the parameters after forward changes nothing backward
    returns: one rule, with and without lengths, for fused and unfused weights."""
    module, params, x, states = cell
    for lengths in (None, np.array([4, 2])):
        y, _, cache = module.forward(params, x, states, lengths=lengths)
        want = module.backward(cache, np.ones_like(y))
        p2, x2 = {k: v.copy() for k, v in params.items()}, x.copy()
        y, _, cache = module.forward(p2, x2, states, lengths=lengths)
        x2 += 1
        for v in p2.values():
            v *= -3
        got = module.backward(cache, np.ones_like(y))
        for group, want_group in zip(got, want):
            for k in want_group:
                np.testing.assert_array_equal(group[k], want_group[k])


def test_backward_checks_its_cache_before_any_kernel(cell):
    """Each of these crashed the process or returned garbage: backward trusted it."""
    module, params, x, states = cell
    edits = {
        "T": lambda c: c.update(T=c["T"] + 3), "B": lambda c: c.update(B=5),
        "sizes": lambda c: c["sizes"].update({d: n + 1 for d, n in c["sizes"].items()}),
        "dtype": lambda c: c.update(dtype=np.dtype(np.float64)),
        "saved": lambda c: c["saved"].popitem(),
        "truncated": lambda c: c["saved"].update(
            {k: v[:1] for k, v in list(c["saved"].items())[:1]}),
        "order": lambda c: c.update(order=np.zeros(c["B"], np.int64)),
        "active": lambda c: c.update(active=np.full(c["T"] + 1, 9, np.int64)),
        "params": lambda c: c["params"].popitem() if c["params"]      # scrn keeps none
        else c["params"].update(W=np.zeros(1, np.float32)),
        "input": lambda c: c["inputs"].update({k: v[:1] for k, v in c["inputs"].items()}),
        "key": lambda c: c.pop("active"),
    }
    for what, edit in edits.items():
        y, _, cache = module.forward(params, x, states)
        edit(cache)
        with pytest.raises(ValueError, match="cache"):
            module.backward(cache, np.ones_like(y))
    for cache in ([1], "cache", {"T": 3}):
        with pytest.raises(ValueError, match="cache"):
            module.backward(cache)
    with pytest.raises(ValueError, match="need_grad"):
        module.forward(params, x, states, need_grad="no")
    with pytest.raises(ValueError, match="d_states must be a dict"):
        module.backward(module.forward(params, x, states)[2], None, tuple(states.values()))
