"""The cell-independent part of every generated module: BLAS from Numba, the elementwise
functions (fast float32 forms), the workspace, argument checks, ragged batches and
parameter initialisation.

Ordinary Python, linted and tested as part of cellc (tests/test_runtime.py). The back end
places everything below the marker line into each generated module verbatim
(`numba/module.py`), so that a module needs only numpy and numba (and llvmlite, which
numba brings) and stays self-contained: Numba's disk cache does not notice changes in
other modules. Functions here take the module's metadata (PARAMS, INPUTS, ...) as
arguments rather than reading globals.
"""
# ruff: noqa: E402  (the module's own imports follow the marker, as placed)
from ..shared_runtime import (  # noqa: F401
    _batch_order,
    _bind,
    _check_upstream,
    _init_params,
    _is_size,
    _last_steps,
    _Named,
    _upstream_states,
    _validate,
    _width,
)

# isort: split
# ---- placed verbatim in every generated module from here on ----
import ctypes
import glob
import operator
import os
import sys
import threading
from collections import namedtuple

import llvmlite.binding as llvm
import numba as nb
import numpy as np
from numba.extending import overload

Gradients = namedtuple("Gradients", ["params", "inputs", "states"])


def _numba_cache_is_ours():
    """Numba's on-disk cache records the name of the module that filled it, and imports
    that module again to load it (numba#7075): importing this file under a second name
    (`lstm` after `generated.lstm`) would fail deep inside Numba. So the cache belongs to
    the first name this file is imported under, recorded beside it; under any other
    name the kernels are compiled in memory, without the cache."""
    here = os.path.abspath(__file__)
    record = os.path.join(os.path.dirname(here), "__pycache__",
                          os.path.splitext(os.path.basename(here))[0] + ".cellc-owner")
    try:
        os.makedirs(os.path.dirname(record), exist_ok=True)
        with open(record, "x", encoding="utf-8") as f:     # the first importer wins
            f.write(__name__)
        return True
    except FileExistsError:
        with open(record, encoding="utf-8") as f:
            return f.read() == __name__
    except OSError:         # a read-only install: Numba picks its own cache directory
        return True


# A fused kernel reads and writes many arrays, and LLVM vectorizes its loop over the units
# only after checking, at run time, that no array it writes overlaps another it uses. Past
# 128 such checks (LLVM's default) it gives up and runs scalar code: an LSTM with zoneout
# of h and c ("loop not vectorized: too many memory checks needed") took 78 ms instead of
# 41 for a medium forward pass. The limit is process-wide; raising it only lets more loops
# vectorize, each check running once per row. (An unknown option is ignored by llvmlite.)
llvm.set_option("", "-vectorize-memory-check-threshold=1024")

# The forward that saves nothing runs the steps in chunks of this many, the hoisted input
# projections of one chunk at a time: at T = 4,000 those of an LSTM would take 4 times the
# memory of its output sequence, and 64 steps of them still make GEMMs of 64 * B rows.
_CHUNK_STEPS = 64

# Kernels never see a NaN/inf assumption: saturated gates pass through inf (exp(1000)),
# so only value-safe fast-math flags are enabled. error_model="numpy" lets division vectorize.
_JIT = dict(cache=_numba_cache_is_ours(), nogil=True, error_model="numpy",
            fastmath={"nsz", "arcp", "contract"})
# A kernel that a time loop calls is inlined there by Numba rather than compiled as a
# function of its own, which would run LLVM over it twice.
_KERNEL = dict(_JIT, inline="always")


# ---- BLAS ------------------------------------------------------------------------------
def _find_cblas():
    """numpy's own OpenBLAS (ILP64 cblas_?gemm), registered as symbols so that the
    time loops can call it from Numba with cache=True (a ctypes pointer would not cache)."""
    libs = sorted(glob.glob(os.path.join(os.path.dirname(np.__file__) + ".libs", "*openblas*")))
    for path in libs:
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_cblas_", "cblas_"):
            try:
                s, d = getattr(lib, prefix + "sgemm64_"), getattr(lib, prefix + "dgemm64_")
            except AttributeError:
                continue
            llvm.add_symbol("cellc_cblas_sgemm", ctypes.cast(s, ctypes.c_void_p).value)
            llvm.add_symbol("cellc_cblas_dgemm", ctypes.cast(d, ctypes.c_void_p).value)
            return True
    return False


_HAVE_CBLAS = _find_cblas()


def _blas_signature(real):
    i32, i64, ptr = nb.types.int32, nb.types.int64, nb.types.voidptr
    return nb.types.void(i32, i32, i32, i64, i64, i64, real, ptr, i64, ptr, i64, real, ptr, i64)


_sgemm = nb.types.ExternalFunction("cellc_cblas_sgemm", _blas_signature(nb.types.float32))
_dgemm = nb.types.ExternalFunction("cellc_cblas_dgemm", _blas_signature(nb.types.float64))


def _gemm(a, b, c, accumulate):
    """c = a @ b, or c += a @ b when accumulate (row-major, unit inner stride), inside
    Numba; in Python, through numpy."""
    if accumulate:
        c += a @ b
    else:
        np.matmul(a, b, out=c)


@overload(_gemm)
def _gemm_in_numba(a, b, c, accumulate):
    if not _HAVE_CBLAS:     # numpy without a bundled OpenBLAS: Numba's np.dot (needs SciPy)
        def portable(a, b, c, accumulate):
            if accumulate:
                c += np.dot(a, b)
            else:
                c[:, :] = np.dot(a, b)
        return portable
    gemm = _sgemm if a.dtype == nb.types.float32 else _dgemm
    one = np.float32(1) if a.dtype == nb.types.float32 else np.float64(1)
    zero = one - one

    def blas(a, b, c, accumulate):
        m, k = a.shape
        n = c.shape[1]
        if m == 0 or n == 0:
            return
        if k == 0:                        # an empty sum
            if not accumulate:
                c[:, :] = zero
            return
        size = a.itemsize     # a leading dimension of one row may be anything: BLAS wants >= cols
        gemm(101, 111, 111, m, n, k, one, a.ctypes, max(a.strides[0] // size, k), b.ctypes,
             max(b.strides[0] // size, n), one if accumulate else zero, c.ctypes,
             max(c.strides[0] // size, n))
    return blas


@nb.njit(inline="always")
def _copy_rows(dst, src, start, stop):
    """dst[start:stop] = src[start:stop] for [B, D] arrays, without the slice
    assignment's shape check (whose error message brings float64 into the IR)."""
    for r in range(start, stop):
        for j in range(dst.shape[1]):
            dst[r, j] = src[r, j]


def _add_column_sums(sums, a):
    """sums[0] += a.sum(axis=0) for a [rows, D] array, by Kahan's compensated addition:
    sums[1] keeps what the running sum lost, sums[2] is scratch for this step's sums. So
    thousands of steps add up about as exactly as one pairwise sum after the loop."""
    raise TypeError("_add_column_sums runs inside Numba time loops only")


@overload(_add_column_sums)     # compiled without fast-math: the compensation must stay
def _add_column_sums_in_numba(sums, a):
    def add(sums, a):
        width = a.shape[1]
        for j in range(width):
            sums[2, j] = 0
        for r in range(a.shape[0]):
            for j in range(width):
                sums[2, j] += a[r, j]
        for j in range(width):
            y = sums[2, j] - sums[1, j]
            total = sums[0, j] + y
            sums[1, j] = (total - sums[0, j]) - y
            sums[0, j] = total
    return add


# ---- the elementwise functions of cellc/ir/functions.py, inside kernels -----------------
# Each is dtype-dispatched when Numba compiles a kernel and compiled once per dtype; LLVM
# inlines it into every kernel that calls it. (Numba's own IR inlining, inline="always",
# gave the same machine code but took 1.0 of the LSTM's 3.3 s cold compile.) libm's
# expf/tanhf do not vectorize in Numba, so float32 tanh and sigmoid use a clamped
# rational approximation (below) that does; float64 keeps libm.
@nb.njit(error_model="numpy")
def _tanh_f32(x):
    """float32 tanh that vectorizes: Eigen's clamped rational approximation (|error| < 4e-7),
    and exactly +-1 from |x| = 9 on, where float32 tanh rounds to +-1 (the rational alone
    stops at 1 - 2.4e-7, so sigmoid(-1e4) would be 1.2e-7 and its derivative not 0)."""
    f = np.float32
    z = min(max(x, f(-7.90531110763549805)), f(7.90531110763549805))
    x2 = z * z
    p = f(-2.76076847742355e-16)
    p = p * x2 + f(2.00018790482477e-13)
    p = p * x2 + f(-8.60467152213735e-11)
    p = p * x2 + f(5.12229709037114e-08)
    p = p * x2 + f(1.48572235717979e-05)
    p = p * x2 + f(6.37261928875436e-04)
    p = p * x2 + f(4.89352455891786e-03)
    q = f(1.19825839466702e-06)
    q = q * x2 + f(1.18534705686654e-04)
    q = q * x2 + f(2.26843463243900e-03)
    q = q * x2 + f(4.89352518554385e-03)
    r = z * p / q
    # +-1 beyond |x| = 9, without a branch (max/min keep a NaN first argument)
    r = max(r, f(2) * f(x >= f(9)) - f(1))
    return min(r, f(1) - f(2) * f(x <= f(-9)))


def _real(numba_type):
    """The numpy scalar type of Numba's float32 or float64."""
    return np.float32 if numba_type == nb.types.float32 else np.float64


_KERNEL_ONLY = "cellc's elementwise functions run inside Numba kernels only"


def _sigmoid(x):
    """Logistic function 1 / (1 + exp(-x)); float32 as 0.5 + 0.5 tanh(x / 2)."""
    raise TypeError(_KERNEL_ONLY)


@overload(_sigmoid)
def _sigmoid_for(x):
    real = _real(x)
    half, one = real(0.5), real(1)
    if real is np.float32:
        def fast(x):
            return half + half * _tanh_f32(half * x)
        return fast

    def exact(x):
        return one / (one + np.exp(-x))
    return exact


def _tanh(x):
    """Hyperbolic tangent; float32 through _tanh_f32."""
    raise TypeError(_KERNEL_ONLY)


@overload(_tanh)
def _tanh_for(x):
    if _real(x) is np.float32:
        def fast(x):
            return _tanh_f32(x)
        return fast

    def exact(x):
        return np.tanh(x)
    return exact


def _relu(x):
    """max(x, 0), NaN kept."""
    raise TypeError(_KERNEL_ONLY)


@overload(_relu)
def _relu_for(x):
    zero = _real(x)(0)

    def relu(x):
        return np.maximum(x, zero)
    return relu


def _softplus(x):
    """log(1 + exp(x)), without overflow."""
    raise TypeError(_KERNEL_ONLY)


@overload(_softplus)
def _softplus_for(x):
    zero = _real(x)(0)

    def softplus(x):
        return np.maximum(x, zero) + np.log1p(np.exp(-np.abs(x)))
    return softplus


def _step(x):
    """Heaviside step: 1 where x > 0, else 0."""
    raise TypeError(_KERNEL_ONLY)


@overload(_step)
def _step_for(x):
    real = _real(x)
    zero = real(0)

    def step(x):                        # no branch: inlined, it stays one expression
        return real(x > zero)
    return step


def _exp(x):
    raise TypeError(_KERNEL_ONLY)


@overload(_exp)
def _exp_for(x):
    return lambda x: np.exp(x)


def _log(x):
    raise TypeError(_KERNEL_ONLY)


@overload(_log)
def _log_for(x):
    return lambda x: np.log(x)


def _sqrt(x):
    raise TypeError(_KERNEL_ONLY)


@overload(_sqrt)
def _sqrt_for(x):
    return lambda x: np.sqrt(x)


def _abs(x):
    raise TypeError(_KERNEL_ONLY)


@overload(_abs)
def _abs_for(x):
    return lambda x: np.abs(x)


def _sign(x):
    raise TypeError(_KERNEL_ONLY)


@overload(_sign)
def _sign_for(x):
    return lambda x: np.sign(x)


def _max(a, b):
    """Elementwise maximum, NaN kept."""
    raise TypeError(_KERNEL_ONLY)


@overload(_max)
def _max_for(a, b):
    return lambda a, b: np.maximum(a, b)


def _min(a, b):
    """Elementwise minimum, NaN kept."""
    raise TypeError(_KERNEL_ONLY)


@overload(_min)
def _min_for(a, b):
    return lambda a, b: np.minimum(a, b)


def _gt(a, b):
    """a > b as 1 or 0 (NaN compares false)."""
    raise TypeError(_KERNEL_ONLY)


@overload(_gt)
def _gt_for(a, b):
    real = _real(a)
    return lambda a, b: real(a > b)


def _ge(a, b):
    """a >= b as 1 or 0 (NaN compares false)."""
    raise TypeError(_KERNEL_ONLY)


@overload(_ge)
def _ge_for(a, b):
    real = _real(a)
    return lambda a, b: real(a >= b)


def _where(c, a, b):
    """a where c is not 0, else b."""
    raise TypeError(_KERNEL_ONLY)


# LLVM inlines it and makes the branch a vector select.
@overload(_where)
def _where_for(c, a, b):
    zero = _real(c)(0)
    return lambda c, a, b: a if c != zero else b


def _floor(x):
    raise TypeError(_KERNEL_ONLY)


@overload(_floor)
def _floor_for(x):
    return lambda x: np.floor(x)


def _mod(a, b):
    """a - b * floor(a / b): the sign of b, as Python's %."""
    raise TypeError(_KERNEL_ONLY)


@overload(_mod)
def _mod_for(a, b):
    return lambda a, b: a - b * np.floor(a / b)


def _sin(x):
    raise TypeError(_KERNEL_ONLY)


@overload(_sin)
def _sin_for(x):
    return lambda x: np.sin(x)


def _cos(x):
    raise TypeError(_KERNEL_ONLY)


@overload(_cos)
def _cos_for(x):
    return lambda x: np.cos(x)


def _logsigmoid(x):
    """log(sigmoid(x)) = -softplus(-x), without overflow."""
    raise TypeError(_KERNEL_ONLY)


@overload(_logsigmoid)
def _logsigmoid_for(x):
    zero = _real(x)(0)

    def logsigmoid(x):
        return np.minimum(x, zero) - np.log1p(np.exp(-np.abs(x)))
    return logsigmoid


def _silu(x):
    """x * sigmoid(x); float32 through _tanh_f32."""
    raise TypeError(_KERNEL_ONLY)


@overload(_silu)
def _silu_for(x):
    real = _real(x)
    half, one = real(0.5), real(1)
    if real is np.float32:
        def fast(x):
            return x * (half + half * _tanh_f32(half * x))
        return fast

    def exact(x):
        return x / (one + np.exp(-x))
    return exact


# ---- the workspace: memory reused between calls ------------------------------------------
class _Workspace:
    """Hands out the arrays of earlier calls again once nothing else refers to them.

    Fresh memory costs a page fault per 4 KiB page on first touch. Measured here: 4,200
    faults and a third of a medium LSTM training step, half of a small one. An array is
    reused only when the workspace holds the last reference to it (no view, cache, output
    or variable of the caller's left), which `sys.getrefcount` tells. Arrays that no call
    used in the last `KEEP_CALLS` calls are let go; `clear_workspace()` lets all go.
    """
    KEEP_CALLS = 8
    PER_SHAPE = 4

    def __init__(self):
        self._lock = threading.Lock()
        self._entries = {}      # (shape, dtype) -> [[array, call that last took it], ...]
        self._calls = 0

    def start_call(self):
        with self._lock:
            self._calls += 1
            oldest = self._calls - self.KEEP_CALLS
            for key in list(self._entries):
                kept = [e for e in self._entries[key] if e[1] >= oldest]
                if kept:
                    self._entries[key] = kept
                else:
                    del self._entries[key]

    def empty(self, shape, dtype):
        if not _REUSE:
            return np.empty(shape, dtype)
        key = (tuple(shape), np.dtype(dtype))
        with self._lock:
            entries = self._entries.setdefault(key, [])
            for entry in entries:
                if _references(entry) == _UNREFERENCED:
                    entry[1] = self._calls
                    return entry[0]
            a = np.empty(shape, dtype)
            if len(entries) < self.PER_SHAPE:
                entries.append([a, self._calls])
            return a

    def clear(self):
        with self._lock:
            self._entries.clear()


def _references(entry):
    return sys.getrefcount(entry[0])


# The count for an array that only its entry holds, measured the same way (the exact
# number differs between Python versions). Free-threaded Python: no reuse.
_UNREFERENCED = _references([np.empty(0), 0])
_REUSE = getattr(sys, "_is_gil_enabled", lambda: True)()
_workspace = _Workspace()
_empty = _workspace.empty


def _contiguous(a):
    """np.ascontiguousarray, into workspace memory."""
    out = _empty(a.shape, a.dtype)
    out[...] = a
    return out


def clear_workspace():
    """Let go of the arrays kept for reuse between calls (see _Workspace)."""
    _workspace.clear()


# ---- checking the arguments: Numba does no bounds checking --------------------------------
def _check_array(what, a, ndim, dtype=None):
    if ndim == 0 and isinstance(a, np.floating):   # a scalar parameter, after numpy arithmetic
        a = np.asarray(a)
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{what} must be a numpy array, not {type(a).__name__}")
    if a.dtype not in (np.float32, np.float64) or not a.dtype.isnative:
        raise ValueError(f"{what} has dtype {a.dtype}; use native float32 or float64")
    if dtype is not None and a.dtype != dtype:
        raise ValueError(f"{what} has dtype {a.dtype} but the parameters are {dtype}; use one dtype")
    if a.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} dimensions, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{what} is not C-contiguous; pass np.ascontiguousarray({str(what).split()[0]})")
    if not _compact(a):     # contiguous to numpy, yet a row stride of 0 or of any size where
        a = a.copy()        # a dimension has size 1: BLAS and the kernels get what they assume
    return a


def _compact(a):
    """Whether `a` has exactly a C array's strides (an empty one: any). Only a dimension
    of size 1 lets a C-contiguous array have other strides."""
    if 1 not in a.shape:
        return a.flags.c_contiguous
    strides, step = [], a.itemsize
    for n in reversed(a.shape):
        strides.append(step)
        step *= n
    return a.size == 0 or a.strides == tuple(reversed(strides))


class _HostArrays:
    """How the shared `_validate` checks, types and makes NumPy arrays (a CUDA module
    passes its own, for device arrays)."""

    check = staticmethod(_check_array)
    dtype = staticmethod(operator.attrgetter("dtype"))
    zeros = staticmethod(np.zeros)
    rows = staticmethod(lambda a, order: a[order])


def _kept(arrays, names=None):
    """Copies of the arguments backward reads (`names`, or all), made by forward
    (need_grad=True): editing an array after forward never changes the gradients."""
    return {k: _contiguous(arrays[k]) for k in (arrays if names is None else names)}


def _owned(saved, params):
    """forward's saved arrays, a copy where one is a caller's parameter itself (a weight
    that no other shares its GEMM with is used as it is)."""
    theirs = {id(v) for v in params.values()}
    return {k: _contiguous(v) if id(v) in theirs else v for k, v in saved.items()}


_CACHE_KEYS = ("sizes", "dtype", "T", "B", "params", "inputs", "saved", "order", "active")


def _check_cache(cache, contract, backward_params):
    """A cache from forward, whole and consistent with its own sizes, before backward's
    kernels (which do no bounds checking) read it. The saved arrays' shapes are checked
    by `_check_saved`, once the sizes are known good."""
    PARAMS, INPUTS, _, DIMS = contract
    if not isinstance(cache, dict) or sorted(cache) != sorted(_CACHE_KEYS):
        raise ValueError("cache is not what forward returned; pass forward's third result "
                         "to backward unchanged")
    sizes, dtype, T, B = cache["sizes"], cache["dtype"], cache["T"], cache["B"]
    if (not isinstance(sizes, dict) or sorted(sizes) != sorted(DIMS)
            or not all(_is_size(n) and n > 0 for n in sizes.values())):
        raise ValueError("cache['sizes'] was changed; pass forward's cache unchanged")
    if dtype not in (np.float32, np.float64) or not (_is_size(T) and _is_size(B)
                                                      and T >= 0 and B >= 0):
        raise ValueError("cache['dtype'], ['T'] or ['B'] was changed; pass forward's cache unchanged")
    for group, names, shape_of in (("params", backward_params,
                                    lambda n: tuple(_width(sizes, d) for d in PARAMS[n])),
                                   ("inputs", INPUTS, lambda n: (T, B, _width(sizes, INPUTS[n])))):
        arrays = cache[group]
        if not isinstance(arrays, dict) or sorted(arrays) != sorted(names):
            raise ValueError(f"cache[{group!r}] was changed; pass forward's cache unchanged")
        for n in names:
            _check_kept(_Named("cache[{!r}][{!r}]", group, n), arrays[n], shape_of(n), dtype)
    order, active = cache["order"], cache["active"]
    if not (isinstance(active, np.ndarray) and active.dtype == np.int64 and active.shape == (T + 1,)
            and (order is None or (isinstance(order, np.ndarray) and order.shape == (B,)
                                   and order.dtype.kind == "i"))):
        raise ValueError("cache['order'] or ['active'] was changed; pass forward's cache unchanged")
    if (active.max() > B or active.min() < 0 or active[T] != 0
            or (order is not None and not np.array_equal(np.sort(order), np.arange(B)))):
        raise ValueError("cache['order'] or ['active'] was changed; pass forward's cache unchanged")


def _check_kept(what, a, shape, dtype):
    if not (isinstance(a, np.ndarray) and a.shape == shape and a.dtype == dtype
            and _compact(a)):
        raise ValueError(f"{what} is not the array forward saved (shape {shape}, {np.dtype(dtype)}); "
                         "pass forward's cache unchanged")


def _check_saved(saved, shapes, dtype):
    """forward's saved arrays against the shapes the cache's sizes give them."""
    if not isinstance(saved, dict) or sorted(saved) != sorted(shapes):
        raise ValueError("cache['saved'] was changed; pass forward's cache unchanged")
    for n, shape in shapes.items():
        _check_kept(_Named("cache['saved'][{!r}]", n), saved[n], shape, dtype)


# ---- ragged batches (forward and backward with lengths) -----------------------------------
def _sorted_padded(x, order, active):
    """x [T, B, D] with its sequences in `order` and every step past a sequence's end
    zeroed, so that padding, whatever it holds, never reaches a gradient."""
    T, B = x.shape[:2]
    out = np.take(x, order, axis=1, out=_empty(x.shape, x.dtype), mode="clip")
    out[np.arange(B)[None, :] >= active[:T, None]] = 0
    return out


def _in_caller_order(grads, order):
    """Gradients computed in `order` (longest first), back in the caller's batch order."""
    if order is None:
        return grads
    back = np.argsort(order)
    return Gradients(grads.params, {k: np.take(v, back, axis=1) for k, v in grads.inputs.items()},
                     {k: v[back] for k, v in grads.states.items()})


# ---- shared by the CPU and CUDA targets (cellc/backend/shared_runtime.py) ----
