"""The cell-independent part of every generated CUDA module: the array library a call
runs on (torch or CuPy on a GPU, NumPy in Numba's CUDA simulator), the elementwise
functions and the row sums inside kernels, kernel launches, argument checks, ragged
batches and parameter initialisation.

Ordinary Python, linted and tested as part of cellc (tests/test_cuda.py). The back end
places everything below the marker line into each generated CUDA module verbatim
(`cuda/module.py`), so that a module needs only numpy, numba and numba-cuda (and torch or
CuPy for the GEMMs on a GPU).

Kernels run under Numba's CUDA target on a GPU and as Python under its simulator
(NUMBA_ENABLE_CUDASIM=1). Each function kernels call is written once, as the factory
of an `@overload(..., target="cuda")` (what the CUDA compiler inlines, its constants in
the kernel's dtype); the simulator, which ignores overloads, calls the same factory's
function from Python (`_device_function`). So the code the simulator tests is the code
the GPU runs.

The argument checks, ragged batches' order and parameter initialisation are shared with
the CPU target (`backend/shared_runtime.py`, placed at its line below).
"""
# ruff: noqa: E402  (the module's own imports follow the marker, as placed)
from ..shared_runtime import (  # noqa: F401
    _batch_order,
    _bind,
    _check_upstream,
    _init_params,
    _last_steps,
    _Named,
    _upstream_states,
    _validate,
    _width,
)

# isort: split
# ---- placed verbatim in every generated module from here on ----
import math
from collections import namedtuple

import numba as nb
import numpy as np
from numba import cuda
from numba.extending import overload

Gradients = namedtuple("Gradients", ["params", "inputs", "states"])

# ---- shared by the CPU and CUDA targets (cellc/backend/shared_runtime.py) ----

_SIMULATED = bool(nb.config.ENABLE_CUDASIM)
# Kernels' math: libdevice's on a GPU (math.exp on float32 is expf); NumPy's in the
# simulator, whose float32 scalars stay float32 and overflow to inf as on a GPU.
_m = np if _SIMULATED else math
# The forward that saves nothing runs the steps in chunks of this many (as on the CPU).
_CHUNK_STEPS = 64
# Threads per block of an elementwise kernel (one per unit of a row), and at most per row
# of a kernel that sums over a row's units: a power of two, the size of its shared buffer.
_THREADS = 256
_ROW_THREADS = 256
# numba-cuda's fastmath swaps in approximate division, square root and exp (ftz, __expf):
# kept off, so that a GPU's float32 stays within the CPU's tested error.
_CUDA_JIT = dict(fastmath=False)


# ---- the array library of a call ----------------------------------------------------------
class _NumPy:
    """Arrays in host memory as the simulator's device memory: NumPy runs the GEMMs and
    the whole-array operations, the simulator the kernels."""

    def owns(self, a):
        return isinstance(a, np.ndarray)

    def wrap(self, a):
        """A caller's device array as this library's, without a copy where possible."""
        return a.copy_to_host() if hasattr(a, "copy_to_host") else a

    def give(self, a):
        """An array back to the caller, as the simulator's device array."""
        return cuda.to_device(a if a.flags.c_contiguous else a.copy())

    def dtype(self, a):
        return np.dtype(a.dtype)

    def empty(self, shape, dtype):
        return np.empty(shape, dtype)

    def zeros(self, shape, dtype):
        return np.zeros(shape, dtype)

    def zeros_like(self, a):
        return np.zeros_like(a)

    def eye(self, n, dtype):
        return np.eye(n, dtype=dtype)

    def sum(self, a):
        return a.sum()

    def index(self, host):
        return np.asarray(host, np.int64)

    def take(self, a, index, axis):
        return np.take(a, index, axis=axis)

    def contiguous(self, a):
        return np.ascontiguousarray(a)

    def copy(self, a):
        return a.copy()

    def concat(self, parts):
        return np.concatenate(parts, axis=1)

    def column_sums(self, a):
        return a.sum(axis=0)

    def is_contiguous(self, a):
        return a.flags.c_contiguous

    def gemm(self, a, b, c, accumulate):
        if accumulate:
            c += a @ b
        else:
            np.matmul(a, b, out=c)

    def host(self, a):
        return np.asarray(a)


class _Torch(_NumPy):
    """torch CUDA tensors: cuBLAS through torch.mm, torch's caching allocator."""

    def __init__(self, device=None):
        import torch
        self.lib = torch
        self.device = device
        self._dtypes = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}

    def owns(self, a):
        return isinstance(a, self.lib.Tensor)

    def wrap(self, a):
        if isinstance(a, self.lib.Tensor):
            return a
        return self.lib.as_tensor(a, device=self.device or "cuda")

    def give(self, a):
        return a

    def dtype(self, a):
        return np.dtype(str(a.dtype).replace("torch.", ""))

    def native(self, dtype):
        return self._dtypes[np.dtype(dtype)]

    def empty(self, shape, dtype):
        return self.lib.empty(shape, dtype=self.native(dtype), device=self.device)

    def zeros(self, shape, dtype):
        return self.lib.zeros(shape, dtype=self.native(dtype), device=self.device)

    def zeros_like(self, a):
        return self.lib.zeros_like(a)

    def eye(self, n, dtype):
        return self.lib.eye(n, dtype=self.native(dtype), device=self.device)

    def index(self, host):
        return self.lib.as_tensor(np.asarray(host, np.int64), device=self.device)

    def take(self, a, index, axis):
        return a.index_select(axis, index)

    def contiguous(self, a):
        return a.contiguous()

    def copy(self, a):
        return a.clone()

    def concat(self, parts):
        return self.lib.cat(parts, dim=1)

    def column_sums(self, a):
        return a.sum(dim=0)

    def is_contiguous(self, a):
        return a.is_contiguous()

    def gemm(self, a, b, c, accumulate):
        if accumulate:
            c.addmm_(a, b)
        elif c.is_contiguous():
            self.lib.mm(a, b, out=c)
        else:
            c.copy_(a @ b)

    def host(self, a):
        return a.cpu().numpy()


class _CuPy(_NumPy):
    """CuPy arrays: cuBLAS through cupy.matmul, CuPy's memory pool."""

    def __init__(self):
        import cupy
        self.lib = cupy

    def owns(self, a):
        return isinstance(a, self.lib.ndarray)

    def wrap(self, a):
        return a if isinstance(a, self.lib.ndarray) else self.lib.asarray(a)

    def give(self, a):
        return a

    def empty(self, shape, dtype):
        return self.lib.empty(shape, dtype)

    def zeros(self, shape, dtype):
        return self.lib.zeros(shape, dtype)

    def zeros_like(self, a):
        return self.lib.zeros_like(a)

    def eye(self, n, dtype):
        return self.lib.eye(n, dtype=dtype)

    def index(self, host):
        return self.lib.asarray(np.asarray(host, np.int64))

    def take(self, a, index, axis):
        return self.lib.take(a, index, axis=axis)

    def contiguous(self, a):
        return self.lib.ascontiguousarray(a)

    def concat(self, parts):
        return self.lib.concatenate(parts, axis=1)

    def gemm(self, a, b, c, accumulate):
        if accumulate:
            c += a @ b
        else:
            self.lib.matmul(a, b, out=c)

    def host(self, a):
        return self.lib.asnumpy(a)


class _Numba(_Torch):
    """Numba's own device arrays (and any other `__cuda_array_interface__` object), run on
    torch's current GPU without a copy and given back as Numba device arrays. (Without
    torch, `_library` runs them on CuPy, and results come back as CuPy arrays.)"""

    def __init__(self):
        super().__init__("cuda")

    def give(self, a):
        return cuda.as_cuda_array(a)


def _library(a):
    """The array library for a call whose first array is `a`. In the simulator, torch's
    CPU tensors stand for its CUDA tensors (the kernels see them as NumPy arrays), so
    that the torch path of every driver is tested without a GPU."""
    kind = type(a).__module__.split(".")[0]
    if _SIMULATED:
        return _Torch(a.device) if kind == "torch" else _NumPy()
    if kind == "torch":
        return _Torch(a.device)
    if kind == "cupy":
        return _CuPy()
    if hasattr(a, "__cuda_array_interface__"):
        try:
            return _Numba()
        except ImportError:
            pass
        try:
            return _CuPy()
        except ImportError:
            raise ValueError("cellc's CUDA modules run their GEMMs through torch or CuPy; "
                             "install one of them") from None
    raise ValueError(f"expected CUDA arrays (torch CUDA tensors, CuPy arrays or Numba device "
                     f"arrays), got {type(a).__name__}; move the arguments to the GPU first")


def _is_device_array(a):
    """Whether `a` is an array in device memory (the simulator's own, in the simulator)."""
    if _SIMULATED:
        return type(a).__name__ == "FakeCUDAArray" or type(a).__module__.split(".")[0] == "torch"
    return hasattr(a, "__cuda_array_interface__")


def _simulated_arguments(*args):
    """A kernel's arguments as the simulator takes them: torch's tensors (standing for
    CUDA tensors) as NumPy arrays over the same memory."""
    def host(a):
        if isinstance(a, tuple):
            return tuple(host(x) for x in a)
        return a.numpy() if type(a).__module__.split(".")[0] == "torch" else a
    return host(args)


def _gpu_arguments(*args):
    return args


# What a launcher hands its kernel: the arguments as they are on a GPU.
_arguments = _simulated_arguments if _SIMULATED else _gpu_arguments


# ---- the functions kernels call ------------------------------------------------------------
def _real(numba_type):
    """The numpy scalar type of Numba's float32 or float64."""
    return np.float32 if numba_type == nb.types.float32 else np.float64


def _device_function(factory):
    """A function kernels call, from the factory of its implementation: the factory is
    the CUDA target's overload (given the arguments' Numba types, it returns the Python
    function the compiler inlines, its constants typed); the function returned here runs
    that same implementation in the simulator."""
    made = {}

    def simulated(*args):
        key = tuple(nb.typeof(a) for a in args)
        if key not in made:
            made[key] = factory(*key)
        return made[key](*args)

    simulated.__name__ = simulated.__qualname__ = factory.__name__
    simulated.__doc__ = factory.__doc__
    if not _SIMULATED:
        overload(simulated, target="cuda")(factory)
    return simulated


@_device_function
def _sigmoid(x):
    """Logistic function 1 / (1 + exp(-x))."""
    one = _real(x)(1)
    return lambda x: one / (one + _m.exp(-x))


@_device_function
def _tanh(x):
    return lambda x: _m.tanh(x)


@_device_function
def _relu(x):
    """max(x, 0), NaN kept."""
    zero = _real(x)(0)
    return lambda x: x if x != x or x > zero else zero


@_device_function
def _softplus(x):
    """log(1 + exp(x)), without overflow."""
    zero = _real(x)(0)
    return lambda x: (x if x > zero else zero) + _m.log1p(_m.exp(-abs(x)))


@_device_function
def _step(x):
    """Heaviside step: 1 where x > 0, else 0."""
    real = _real(x)
    zero = real(0)
    return lambda x: real(x > zero)


@_device_function
def _exp(x):
    return lambda x: _m.exp(x)


@_device_function
def _log(x):
    return lambda x: _m.log(x)


@_device_function
def _sqrt(x):
    return lambda x: _m.sqrt(x)


@_device_function
def _abs(x):
    return lambda x: abs(x)


@_device_function
def _sign(x):
    """-1, 0 or 1, NaN kept."""
    real = _real(x)
    zero = real(0)
    return lambda x: x if x != x else real(x > zero) - real(x < zero)


@_device_function
def _max(a, b):
    """Elementwise maximum, NaN kept."""
    return lambda a, b: a if a != a or a >= b else b


@_device_function
def _min(a, b):
    """Elementwise minimum, NaN kept."""
    return lambda a, b: a if a != a or a <= b else b


@_device_function
def _gt(a, b):
    """a > b as 1 or 0 (NaN compares false)."""
    real = _real(a)
    return lambda a, b: real(a > b)


@_device_function
def _ge(a, b):
    """a >= b as 1 or 0 (NaN compares false)."""
    real = _real(a)
    return lambda a, b: real(a >= b)


@_device_function
def _where(c, a, b):
    """a where c is not 0, else b."""
    zero = _real(c)(0)
    return lambda c, a, b: a if c != zero else b


@_device_function
def _floor(x):
    return lambda x: _m.floor(x)


@_device_function
def _mod(a, b):
    """a - b * floor(a / b): the sign of b, as Python's %."""
    return lambda a, b: a - b * _m.floor(a / b)


@_device_function
def _sin(x):
    return lambda x: _m.sin(x)


@_device_function
def _cos(x):
    return lambda x: _m.cos(x)


@_device_function
def _logsigmoid(x):
    """log(sigmoid(x)) = -softplus(-x), without overflow."""
    zero = _real(x)(0)
    return lambda x: (x if x < zero else zero) - _m.log1p(_m.exp(-abs(x)))


@_device_function
def _silu(x):
    """x * sigmoid(x)."""
    one = _real(x)(1)
    return lambda x: x / (one + _m.exp(-x))


@_device_function
def _row_sum(x, buffer):
    """The sum of `x` over the threads of a block (a row's units), in every thread: a
    tree in shared memory, the block's size a power of two. Every thread of the block
    must call it, as it synchronises them."""
    def row_sum(x, buffer):
        lane = cuda.threadIdx.x
        buffer[lane] = x
        cuda.syncthreads()
        half = cuda.blockDim.x // 2
        while half > 0:
            if lane < half:
                buffer[lane] += buffer[lane + half]
            cuda.syncthreads()
            half //= 2
        total = buffer[0]
        cuda.syncthreads()
        return total
    return row_sum


# ---- launches ---------------------------------------------------------------------------------
def _blocks(n, threads):
    return (n + threads - 1) // threads


def _unit_launch(rows, width):
    """Grid and block of a kernel with a thread per (row, unit): consecutive threads run
    consecutive units of a row (coalesced loads), blocks of `_THREADS` at most."""
    n = rows * width
    threads = min(_THREADS, n)
    return _blocks(n, threads), threads


def _row_launch(rows, width):
    """Grid and block of a kernel that sums over a row's units: a block per row, a thread
    per unit up to `_ROW_THREADS` (a power of two; each thread then strides the units)."""
    threads = 1
    while threads < min(width, _ROW_THREADS):
        threads *= 2
    return rows, threads


def _scratch(like, count, rows, width):
    """Scratch rows of a kernel that sums over a row's units, `count` per row, in the
    library (and on the device) of the array `like`."""
    xp = _library(like)
    return xp.empty((count, rows, width), xp.dtype(like))


def _contiguous(a):
    """`a`, or a contiguous copy of it, in its own library."""
    return _library(a).contiguous(a)


def _owned(xp, saved, params):
    """forward's saved arrays, a copy where one is a caller's parameter itself."""
    theirs = {id(v) for v in params.values()}
    return {k: xp.copy(v) if id(v) in theirs else v for k, v in saved.items()}


# ---- whole-array operations of the time loops -----------------------------------------------
def _copy_rows(dst, src, start, stop):
    """dst[start:stop] = src[start:stop]."""
    if stop > start:
        dst[start:stop] = src[start:stop]


def _add_column_sums(xp, sums, a):
    """sums[0] += a.sum(axis=0), by Kahan's compensated addition (sums[1] keeps what the
    running sum lost), so that thousands of steps add up about as exactly as one sum
    after the loop."""
    y = xp.column_sums(a) - sums[1]
    total = sums[0] + y
    sums[1] = (total - sums[0]) - y
    sums[0] = total


# ---- argument checks ----------------------------------------------------------------------
def _check_array(xp, what, a, ndim, dtype=None):
    if not _is_device_array(a):
        raise ValueError(f"{what} must be a CUDA array (a torch CUDA tensor, a CuPy array or "
                         f"numba.cuda.to_device(x)), not {type(a).__name__}")
    a = xp.wrap(a)
    kind = xp.dtype(a)
    if kind not in (np.float32, np.float64):
        raise ValueError(f"{what} has dtype {kind}; use float32 or float64")
    if dtype is not None and kind != dtype:
        raise ValueError(f"{what} has dtype {kind} but the parameters are {dtype}; use one dtype")
    if a.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} dimensions, got shape {tuple(a.shape)}")
    if not xp.is_contiguous(a):
        raise ValueError(f"{what} is not C-contiguous; pass a contiguous copy")
    return a


class _DeviceArrays:
    """How the shared `_validate` checks, types and makes device arrays: in the library
    of the first array it checks (which refuses host arrays with a clear error)."""

    def __init__(self, xp=None):
        self.xp = xp

    def check(self, what, a, ndim, dtype):
        if self.xp is None:
            self.xp = _library(a)
        return _check_array(self.xp, str(what), a, ndim, dtype)

    def dtype(self, a):
        return self.xp.dtype(a)

    def zeros(self, shape, dtype):
        return self.xp.zeros(shape, dtype)

    def rows(self, a, order):
        return self.xp.take(a, order, 0)


def _checked(params, inputs, states, need_grad, contract):
    """The CPU module's `_validate` over device arrays. Returns (xp, params, inputs,
    states, sizes, dtype, T, B): the call's array library first."""
    arrays = _DeviceArrays()
    checked = _validate(params, inputs, states, need_grad, contract, arrays)
    return (arrays.xp, *checked)


def _kept(xp, arrays, names=None):
    """Copies of the arguments backward reads, so that editing one after forward never
    changes the gradients."""
    return {k: xp.copy(arrays[k]) for k in (arrays if names is None else names)}


def _check_cache(cache):
    if not isinstance(cache, dict) or "xp" not in cache or "saved" not in cache:
        raise ValueError("cache is not what forward returned; pass forward's third result "
                         "to backward unchanged")


# ---- ragged batches (forward and backward with lengths) -----------------------------------
def _device_order(xp, lengths, T, B):
    """(order, active) as the CPU module computes them (`_batch_order`): `active[t]`
    sequences still run at step t (host integers, which the time loop reads); `order`
    sorts the batch longest first (host integers), None without lengths."""
    if lengths is not None and (_is_device_array(lengths) or xp.owns(lengths)):
        lengths = xp.host(xp.wrap(lengths))
    return _batch_order(lengths, T, B)


def _sorted_padded(xp, x, order, active):
    """x [T, B, D] with its sequences in `order` and every step past a sequence's end
    zeroed, so that padding never reaches a gradient."""
    T, B = (int(n) for n in x.shape[:2])
    out = xp.contiguous(xp.take(x, xp.index(order), 1))
    for t in range(T):
        if active[t] < B:
            out[t, int(active[t]):] = 0
    return out


def _device_last_steps(xp, order, active):
    """`_last_steps`'s index arrays (step, row), on the device."""
    ends, back = _last_steps(order, active)
    return xp.index(ends), xp.index(back)


def _in_caller_order(xp, grads, order):
    """Gradients computed in `order` (longest first), back in the caller's batch order."""
    if order is None:
        return grads
    back = xp.index(np.argsort(order))
    return Gradients(grads.params, {k: xp.take(v, back, 1) for k, v in grads.inputs.items()},
                     {k: xp.take(v, back, 0) for k, v in grads.states.items()})


def _given(xp, grads):
    """Gradients as the caller's kind of array."""
    return Gradients(*({k: xp.give(v) for k, v in group.items()} for group in grads))


# ---- parameters ----------------------------------------------------------------------------
def _device_params(contract, init, hidden, dtype, seed, sizes):
    """Parameters for `sizes` as Numba device arrays, drawn exactly as the CPU module
    draws them (same seed, same values)."""
    return {k: cuda.to_device(v) for k, v in _init_params(contract, init, hidden, dtype, seed,
                                                          sizes).items()}
