"""The cell-independent part of every generated module (cellc/backend/numba/runtime.py),
tested as the ordinary Python it is: the kernels' functions, BLAS from Numba and from
Python, argument checks, ragged batches, initialisation; and that every generated module
carries it verbatim."""
from pathlib import Path

import numba as nb
import numpy as np
import pytest

from cellc.backend.numba import module, runtime
from cellc.ir.functions import FUNCTIONS

ROOT = Path(__file__).resolve().parent.parent


def kernel_of(name: str, arity: int):
    helper = getattr(runtime, f"_{name}")
    if arity == 1:
        @nb.njit
        def apply(a, b, out):
            for i in range(a.shape[0]):
                out[i] = helper(a[i])
    elif arity == 2:
        @nb.njit
        def apply(a, b, out):
            for i in range(a.shape[0]):
                out[i] = helper(a[i], b[i])
    else:                       # where(c, a, b): the condition, then two branches
        @nb.njit
        def apply(a, b, out):
            for i in range(a.shape[0]):
                out[i] = helper(a[i] - a[i] * (i % 3 == 0), a[i], b[i])
    return apply


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_function_has_its_kernel_helper(name, dtype):
    """Each function a spec may call runs inside kernels, in the kernel's dtype, and
    agrees with the interpreter's NumPy reference (float32 tanh and sigmoid: within
    the fast forms' documented bounds)."""
    spec = FUNCTIONS[name].spec
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.normal(scale=3, size=200), [0.0, 1.0, -1.0, 40.0, -40.0]])
    b = rng.normal(scale=3, size=a.size)
    if name in ("log", "sqrt"):
        a = np.abs(a) + 0.1
    a, b = a.astype(dtype), b.astype(dtype)
    out = np.empty_like(a)
    kernel_of(name, spec.arity)(a, b, out)
    assert out.dtype == dtype
    args = [v.astype(np.float64) for v in (a, b)]
    if spec.arity == 3:
        args = [np.where(np.arange(a.size) % 3 == 0, 0.0, args[0])] + args
    want = spec.numpy(*args[: spec.arity])
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol)


def test_helpers_are_for_kernels_only():
    with pytest.raises(TypeError, match="inside Numba kernels"):
        runtime._sigmoid(0.5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("accumulate", [False, True])
def test_gemm_in_numba_and_in_python(dtype, accumulate):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(7, 5)).astype(dtype)
    b = rng.normal(size=(5, 3)).astype(dtype)
    c0 = rng.normal(size=(9, 3)).astype(dtype)
    want = c0[:7] * accumulate + a @ b

    @nb.njit
    def jitted(a, b, c, accumulate):
        runtime._gemm(a, b, c[:7], accumulate)

    for call in (jitted, runtime._gemm):
        c = c0.copy()
        call(a, b, c if call is jitted else c[:7], accumulate)
        np.testing.assert_allclose(c[:7], want, rtol=1e-5)
        np.testing.assert_array_equal(c[7:], c0[7:])        # rows past the view untouched


CONTRACT = ({"W": ("I", "H"), "b": ("H",)}, {"x": "I"}, {"h": "H"}, ("H", "I"))


def test_validate_fills_omitted_states_and_refuses_bad_arguments():
    params = {"W": np.zeros((3, 4)), "b": np.zeros(4)}
    x = np.zeros((5, 2, 3))
    params, inputs, states, sizes, dtype, T, B = runtime._validate(params, x, None, True, CONTRACT, runtime._HostArrays)
    assert (sizes, dtype, T, B) == ({"I": 3, "H": 4}, np.float64, 5, 2)
    assert states["h"].shape == (2, 4) and not states["h"].any()
    for bad, message in [({**params, "b": np.zeros(5)}, "size H is 5"),
                         ({**params, "W": params["W"].astype(np.float32)}, "one dtype"),
                         ({"W": params["W"]}, "missing"),
                         ({**params, "W": np.zeros((4, 3))}, "size H is 4 here but 3")]:
        with pytest.raises(ValueError, match=message):
            runtime._validate(bad, x, None, True, CONTRACT, runtime._HostArrays)
    with pytest.raises(ValueError, match="C-contiguous"):
        runtime._validate(params, np.zeros((2, 5, 3)).transpose(1, 0, 2), None, True, CONTRACT,
                          runtime._HostArrays)


def test_batch_order_for_ragged_batches():
    order, active = runtime._batch_order(np.array([2, 5, 0, 5]), 5, 4)
    assert order.tolist() == [1, 3, 0, 2]            # longest first, stable
    assert active.tolist() == [3, 3, 2, 2, 2, 0]
    assert runtime._batch_order(None, 3, 2)[0] is None
    with pytest.raises(ValueError, match="lie in"):
        runtime._batch_order(np.array([6, 1]), 5, 2)


def test_init_params_kinds():
    params = runtime._init_params(
        ({"W": ("H", "H"), "b": ("H",), "c": ("H",)}, {}, {}, ("H",)),
        {"W": ("orthogonal", ()), "b": ("constant", (1.5,))}, ("H",), np.float32, 0, {"H": 6})
    np.testing.assert_allclose(params["W"] @ params["W"].T, np.eye(6), atol=1e-5)
    assert np.all(params["b"] == 1.5)
    assert np.all(np.abs(params["c"]) <= 1 / np.sqrt(6)) and params["c"].dtype == np.float32


def test_every_generated_module_carries_the_runtime_verbatim():
    text = module.runtime_source()
    assert "def _validate(" in text and "class _Workspace" in text
    for path in sorted((ROOT / "generated").glob("*.py")):
        if path.name != "__init__.py":
            assert text in path.read_text(encoding="utf-8"), path.name
