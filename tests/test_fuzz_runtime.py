"""Fuzzing what users hand to compiled code: the generated modules' `forward`, `backward`
and `init_params`, the layers, and the bytes of a cached module.

A valid problem (tiny sizes, T and B down to 0) is broken in one to three random ways:
keys dropped or added, shapes and dtypes changed, arrays replaced by lists or scalars,
strides numpy still calls contiguous (a row stride of 0, a huge one), states given as a
tuple, lengths out of range, the cache edited between forward and backward. Whatever
comes in, the only exception allowed out is ValueError, raised before any kernel runs;
a crash of the process fails the test. A call that succeeds must give exactly what the
same call gives on clean, compact copies of its arguments.

CELLC_FUZZ_EXAMPLES sets the examples per test (default 150).
"""
import os
from datetime import timedelta

import numpy as np
from cellcheck import all_sizes, generated
from conftest import ROOT
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cellc.layers import Layer
from cellc.runtime import loader

EXAMPLES = int(os.environ.get("CELLC_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=60), derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MODULES = {n: generated(ROOT / "specs" / f"{n}.toml")[0] for n in ("gru", "lstmp", "ln_lstm")}


def odd_strides(a, row_stride):
    """`a` with the stride of its first axis changed, where numpy still calls it
    C-contiguous (that axis has size 1)."""
    if a.ndim == 0 or a.shape[0] != 1:
        return a
    return np.lib.stride_tricks.as_strided(a, a.shape, (row_stride,) + a.strides[1:])


def broken(draw, a):
    """One way to spoil an array argument."""
    kind = draw(st.sampled_from(["dtype", "shape", "fortran", "slice", "list", "scalar",
                                 "none", "stride", "stride", "big-endian", "zero-size",
                                 "nan"]))
    if not isinstance(a, np.ndarray):
        return a
    if kind == "dtype":
        return a.astype(draw(st.sampled_from([np.float16, np.int32, np.float64, np.float32,
                                              np.complex64, bool])))
    if kind == "shape":
        return a.reshape(-1) if a.ndim > 1 else a[None]
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "slice":
        return a[::2] if a.ndim and len(a) > 1 else a[..., :0]
    if kind == "list":
        return a.tolist()
    if kind == "scalar":
        return 1.0
    if kind == "none":
        return None
    if kind == "stride":
        return odd_strides(a, draw(st.sampled_from([0, 4096])))
    if kind == "big-endian":
        return a.astype(a.dtype.newbyteorder(">"))
    if kind == "zero-size":
        return a[..., :0]
    return np.full_like(a, np.nan)


@st.composite
def runtime_call(draw):
    name = draw(st.sampled_from(sorted(MODULES)))
    module = MODULES[name]
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    T, B = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    sizes = all_sizes(module, {"I": draw(st.integers(1, 3)), "H": draw(st.integers(2, 4))})
    params = module.init_params(dtype, seed=draw(st.integers(0, 3)), **sizes)
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    x = rng.normal(size=(T, B, sizes["I"])).astype(dtype)
    states = {s: rng.normal(size=(B, sizes[d])).astype(dtype) for s, d in module.STATES.items()}
    args = {"params": params, "inputs": x, "states": states, "lengths": None, "need_grad": True}
    if draw(st.booleans()) and B:
        args["lengths"] = rng.integers(0, T + 1, size=B)
    edits = []
    for _ in range(draw(st.integers(0, 3))):
        target = draw(st.sampled_from(["param", "param", "x", "state", "states", "lengths",
                                       "need_grad", "inputs", "params"]))
        if target == "param":
            key = draw(st.sampled_from(sorted(params)))
            args["params"] = dict(args["params"], **{key: broken(draw, params[key])})
        elif target == "x":
            args["inputs"] = broken(draw, x)
        elif target == "state" and states and isinstance(args["states"], dict):
            key = draw(st.sampled_from(sorted(states)))
            args["states"] = dict(args["states"], **{key: broken(draw, states[key])})
        elif target == "states":
            args["states"] = draw(st.sampled_from([None, tuple(states.values()),
                                                   list(states.values()), {"bogus": x}, 3]))
        elif target == "lengths":
            args["lengths"] = draw(st.sampled_from([
                [T + 1] * B, [-1] * B, [0.5] * B, [True] * B, [[1]] * B, [1] * (B + 1),
                np.zeros(B, np.uint8), "a"]))
        elif target == "need_grad":
            args["need_grad"] = draw(st.sampled_from([False, "no", None, 1, np.bool_(True)]))
        elif target == "inputs":
            args["inputs"] = draw(st.sampled_from([{"x": x, "y": x}, {1: x}, {}, [x]]))
        else:
            args["params"] = draw(st.sampled_from([[], {}, {**params, "extra": x},
                                                   {k: v for k, v in list(params.items())[1:]}]))
        edits.append(target)
    cache_edit = draw(st.sampled_from([None, None, "T", "B", "sizes", "saved", "order",
                                       "active", "input", "dtype", "key"]))
    upstream = draw(st.sampled_from(["ones", "none", "wrong-shape", "wrong-dtype", "list"]))
    return name, args, cache_edit, upstream


def clean(value):
    """The same argument, every array a fresh compact copy."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.size:
        return np.array(value, order="C", copy=True)
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    return value


def spoil(cache, edit):
    if edit == "T":
        cache["T"] += 1
    elif edit == "B":
        cache["B"] += 1
    elif edit == "sizes":
        cache["sizes"] = {k: v + 1 for k, v in cache["sizes"].items()}
    elif edit == "saved":
        key = sorted(cache["saved"])[0]
        cache["saved"][key] = cache["saved"][key][..., :1].copy()
    elif edit == "order":
        cache["order"] = np.zeros(cache["B"], np.int64)
    elif edit == "active":
        cache["active"] = cache["active"] + 1
    elif edit == "input":
        cache["inputs"] = {k: v[:, :0] for k, v in cache["inputs"].items()}
    elif edit == "dtype":
        cache["dtype"] = np.dtype(np.float16)
    elif edit == "key":
        del cache["saved"]


@FUZZ
@given(runtime_call())
def test_random_runtime_arguments(call):
    name, args, cache_edit, upstream = call
    module = MODULES[name]
    try:
        y, final, cache = module.forward(**args)
    except ValueError:
        event("forward refused")
        return
    want, want_final, _ = module.forward(**clean(args))
    np.testing.assert_array_equal(y, want)
    for k in final:
        np.testing.assert_array_equal(final[k], want_final[k])
    if cache is None:
        return
    spoiled = cache_edit is not None and not (          # edits that change nothing
        (cache_edit == "order" and cache["B"] <= 1) or (cache_edit == "input" and cache["B"] == 0))
    spoil(cache, cache_edit)
    dy = {"ones": np.ones_like(y), "none": None, "wrong-shape": np.ones(y.shape + (1,), y.dtype),
          "wrong-dtype": np.ones(y.shape, np.float16), "list": y.tolist()}[upstream]
    try:
        grads = module.backward(cache, dy)
    except ValueError as err:
        assert spoiled or upstream in ("wrong-shape", "wrong-dtype", "list"), err
        event("backward refused")
        return
    event("forward and backward ran")
    assert not spoiled, f"backward took a cache with {cache_edit} edited"
    assert upstream in ("ones", "none"), f"backward took a {upstream} upstream gradient"
    for k, v in args["params"].items():
        assert grads.params[k].shape == np.shape(v)


@st.composite
def layer_call(draw):
    layer = Layer(MODULES["gru"], draw(st.integers(1, 2)), bidirectional=draw(st.booleans()),
                  merge=draw(st.sampled_from(["concat", "sum"])),
                  batch_first=draw(st.booleans()))
    T, B = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    params = layer.init_params(I=2, H=3)
    x = np.ones((B, T, 2) if layer.batch_first else (T, B, 2), np.float32)
    args = {"params": params, "x": x, "states": None, "lengths": None}
    for _ in range(draw(st.integers(0, 3))):
        target = draw(st.sampled_from(["param", "x", "states", "lengths", "params"]))
        if target == "param":
            key = draw(st.sampled_from(sorted(params)))
            args["params"] = dict(args["params"], **{key: broken(draw, params[key])})
        elif target == "x":
            args["x"] = broken(draw, x)
        elif target == "states":
            args["states"] = draw(st.sampled_from([
                (np.zeros((1, B, 3), np.float32),), {"h": np.zeros((5, B, 3), np.float32)},
                {"h": [0.0]}, {"c": x}, {"h": np.zeros((layer.num_layers * layer.directions, B, 3),
                                                       np.float32)}]))
        elif target == "lengths":
            args["lengths"] = draw(st.sampled_from([[T + 1] * B, [-1] * B, "a", [1] * (B + 2)]))
        else:
            args["params"] = draw(st.sampled_from([[], {}, {**params, "W": x}]))
    d_out = draw(st.sampled_from(["ones", "none", "list", "wrong-shape"]))
    d_states = draw(st.sampled_from([None, (1,), {"h": np.zeros((9, B, 3), np.float32)},
                                     {"q": None}]))
    return layer, args, d_out, d_states


@FUZZ
@given(layer_call())
def test_random_layer_arguments(call):
    layer, args, d_out, d_states = call
    try:
        y, final, cache = layer.forward(**args)
    except ValueError:
        event("forward refused")
        return
    dy = {"ones": np.ones_like(y), "none": None, "list": y.tolist(),
          "wrong-shape": np.ones(y.shape[:2] + (y.shape[2] + 1,), y.dtype)}[d_out]
    try:
        grads = layer.backward(cache, dy, d_states)
    except ValueError:
        event("backward refused")
        return
    event("forward and backward ran")
    assert d_out in ("ones", "none") and d_states is None
    assert set(grads.params) == set(args["params"])


GOOD = loader.sealed((ROOT / "generated" / "elman.py").read_text())


@st.composite
def damaged_module(draw):
    data = bytearray(GOOD.encode())
    kind = draw(st.sampled_from(["random", "cut", "flip", "insert", "delete", "append"]))
    if kind == "random":
        return draw(st.binary(max_size=4000))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "cut":
            del data[at:]
        elif kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        else:
            data += draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@FUZZ
@given(damaged_module())
def test_damaged_cached_modules_are_never_taken_as_intact(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cache") / "elman_0.py"
    path.write_bytes(data)
    assert loader.intact(path) == (data == GOOD.encode())
