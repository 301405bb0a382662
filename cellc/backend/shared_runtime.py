"""The run-time code both targets' generated modules carry: the size rules and checks of a
call's arguments, a ragged batch's order, parameter initialisation. So a CPU module and a
CUDA module check arguments with the same code and messages, sort batches alike and draw
the same parameters for a seed.

Each target's runtime (`numba/runtime.py`, `cuda/runtime.py`) has a line that this
file's code, from its marker on, replaces in a generated module (`numba/module.py:
runtime_source`); the runtimes import it above their own markers, so that they lint and
test as Python. Nothing here knows NumPy arrays from device arrays: `_validate` takes
an `arrays` object for that.
"""
import numpy as np


# ---- placed verbatim in every generated module from here on ----
class _Named:
    """An argument's name in an error message, formatted only when there is an error:
    formatting them all eagerly took most of the argument checks' 24 us per call."""
    __slots__ = ("text", "args")

    def __init__(self, text, *args):
        self.text, self.args = text, args

    def __str__(self):
        return self.text.format(*self.args)


def _is_size(n):
    return isinstance(n, (int, np.integer)) and not isinstance(n, (bool, np.bool_))


_WIDTH_ONE = "1"     # the dimension of a width of one: a per-row scalar, a scalar parameter


def _width(sizes, dim):
    return 1 if dim == _WIDTH_ONE else sizes[dim]


def _bind(sizes, dim, n, what):
    if dim == _WIDTH_ONE:
        if n != 1:
            raise ValueError(f"{what}: the spec gives this dimension size 1")
        return
    if n == 0:
        raise ValueError(f"{what}: size {dim} is 0; sizes of a cell's vectors are at least 1")
    if sizes.setdefault(dim, n) != n:
        raise ValueError(f"{what}: size {dim} is {n} here but {sizes[dim]} elsewhere")


def _validate(params, inputs, states, need_grad, contract, arrays):
    """Check everything before any kernel runs. `contract` is the module's
    (PARAMS, INPUTS, STATES, DIMS); `arrays` checks, types and makes the arrays (the CPU
    module's `_HostArrays`, a CUDA module's device library). Returns (params, inputs,
    states, sizes, dtype, T, B): new dicts of the checked arrays, omitted states as zeros."""
    PARAMS, INPUTS, STATES, DIMS = contract
    if not isinstance(need_grad, (bool, np.bool_)):
        raise ValueError(f"need_grad must be True or False, not {need_grad!r}")
    if not isinstance(params, dict):
        raise ValueError("params must be a dict of arrays keyed as in the spec")
    missing = [p for p in PARAMS if p not in params]
    extra = [p for p in params if p not in PARAMS]
    if missing or extra:
        raise ValueError(f"params: missing {missing}, unexpected {extra}; expected {list(PARAMS)}")
    dtype = None
    sizes = {}
    params = dict(params)           # the checked arrays (compact copies of odd ones) from here
    for name, shape in PARAMS.items():
        a = params[name] = arrays.check(_Named("params[{!r}]", name), params[name], len(shape), dtype)
        dtype = arrays.dtype(a)
        what = _Named("params[{!r}] of shape {}", name, tuple(a.shape))
        for d, n in zip(shape, a.shape):
            _bind(sizes, d, n, what)
    if not isinstance(inputs, dict):
        if len(INPUTS) != 1:
            raise ValueError(f"this cell has several inputs; pass a dict with keys {list(INPUTS)}")
        inputs = {next(iter(INPUTS)): inputs}
    if set(inputs) != set(INPUTS):
        raise ValueError(f"inputs must have keys {list(INPUTS)}, got {list(inputs)}")
    inputs = dict(inputs)
    T = B = None
    for name, dim in INPUTS.items():
        a = inputs[name] = arrays.check(_Named("{} (inputs[{!r}])", name, name), inputs[name], 3, dtype)
        if T is None:
            T, B = a.shape[:2]
        if a.shape[:2] != (T, B):
            raise ValueError(f"inputs[{name!r}] has shape {tuple(a.shape)}; all inputs need the same T and B")
        _bind(sizes, dim, a.shape[2],
              _Named("inputs[{!r}] of shape {} (time-major [T, B, {}])", name, tuple(a.shape), dim))
    if states is not None and not isinstance(states, dict):
        raise ValueError(f"states must be a dict of [B, size] arrays keyed {list(STATES)} "
                         f"(or None for zeros), not {type(states).__name__}")
    states = dict(states or {})
    extra = [s for s in states if s not in STATES]
    if extra:
        raise ValueError(f"unknown states {extra}; this cell's states are {list(STATES)}")
    for name, dim in STATES.items():
        if states.get(name) is not None:
            a = states[name] = arrays.check(_Named("states[{!r}]", name), states[name], 2, dtype)
            if a.shape[0] != B:
                raise ValueError(f"states[{name!r}] has shape {tuple(a.shape)}; expected batch size {B}")
            _bind(sizes, dim, a.shape[1], _Named("states[{!r}] of shape {}", name, tuple(a.shape)))
    unknown = [d for d in DIMS if d not in sizes]
    if unknown:
        raise ValueError(f"cannot tell the size of {unknown} from the arguments; pass initial states")
    for name, dim in STATES.items():
        if states.get(name) is None:
            states[name] = arrays.zeros((B, _width(sizes, dim)), dtype)
    return params, inputs, states, sizes, dtype, T, B


def _check_upstream(arrays, what, a, shape, dtype):
    """An upstream gradient, checked as `arrays` checks arguments (None stays None)."""
    if a is None:
        return None
    a = arrays.check(what, a, len(shape), dtype)
    if tuple(a.shape) != shape:
        raise ValueError(f"{what} has shape {tuple(a.shape)}, expected {shape}")
    return a


def _upstream_states(arrays, d_states, B, sizes, dtype, order, STATES):
    """The final states' upstream gradients, checked, zeros where omitted, in batch order."""
    if d_states is not None and not isinstance(d_states, dict):
        raise ValueError(f"d_states must be a dict of [B, size] arrays keyed {list(STATES)} "
                         f"(or None), not {type(d_states).__name__}")
    d_states = dict(d_states or {})
    if [s for s in d_states if s not in STATES]:
        raise ValueError(f"d_states has unknown keys; this cell's states are {list(STATES)}")
    upstream = {}
    for name, dim in STATES.items():
        g = _check_upstream(arrays, _Named("d_states[{!r}]", name), d_states.get(name),
                            (B, _width(sizes, dim)), dtype)
        if g is None:
            g = arrays.zeros((B, _width(sizes, dim)), dtype)
        upstream[name] = g if order is None else arrays.rows(g, order)
    return upstream


def _batch_order(lengths, T, B):
    """(order, active) for a batch: `active[t]` sequences are still running at step t
    (active[T] = 0). Without lengths every sequence runs all T steps and order is None;
    with them the batch is sorted longest first (stable), as a packed sequence is."""
    active = np.full(T + 1, B, np.int64)
    active[T] = 0
    if lengths is None:
        return None, active
    lengths = np.asarray(lengths)
    if lengths.shape != (B,) or lengths.dtype.kind not in "iu":
        raise ValueError(f"lengths must be {B} integers (one per sequence), got "
                         f"{lengths.dtype} array of shape {lengths.shape}")
    if B and (lengths.min() < 0 or lengths.max() > T):
        raise ValueError(f"lengths must lie in [0, T={T}], got {lengths.min()}..{lengths.max()}")
    order = np.argsort(-lengths.astype(np.int64), kind="stable")
    active[:T] = np.count_nonzero(lengths[None, :] > np.arange(T)[:, None], axis=1)
    return order, active


def _last_steps(order, active):
    """Index arrays (step, row) that pick each sequence's final state, in the caller's
    order, from a [T + 1, B, ...] state sequence kept in `order`."""
    back = np.argsort(order)
    T = len(active) - 1
    ends = np.count_nonzero(np.arange(len(order))[None, :] < active[:T, None], axis=0)
    return ends[back], back


def _init_params(contract, init, hidden, dtype, seed, sizes):
    """Parameters for `sizes`, keyed as in the spec: `init` overrides per parameter, the
    default is uniform in [-1/sqrt(n), 1/sqrt(n)] with n the largest of the `hidden`
    dimensions (PyTorch's RNN/LSTM/GRU convention, its hidden_size the widest state)."""
    PARAMS, _, _, DIMS = contract
    missing = [d for d in DIMS if d not in sizes]
    unknown = [d for d in sizes if d not in DIMS]
    if missing or unknown:
        raise ValueError(f"init_params needs sizes for {list(DIMS)}; missing {missing}, unknown {unknown}")
    for d, n in sizes.items():
        if not _is_size(n) or n < 1:
            raise ValueError(f"init_params: size {d} must be a positive integer, not {n!r}")
    try:
        checked = np.dtype(dtype)
    except TypeError:
        checked = None
    if checked not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, not {dtype!r}")
    dtype = checked
    if seed is not None and (not _is_size(seed) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer or None, not {seed!r}")
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(max([sizes[d] for d in hidden] + [1]))
    params = {}
    for name, shape in PARAMS.items():
        shape = tuple(int(_width(sizes, d)) for d in shape)
        kind, args = init.get(name, ("default", ()))
        if kind == "default":
            value = rng.uniform(-bound, bound, shape)
        elif kind == "uniform":
            value = rng.uniform(args[0], args[1], shape)
        elif kind == "normal":
            value = rng.normal(args[0], args[1], shape)
        elif kind == "orthogonal":
            q, r = np.linalg.qr(rng.normal(size=(max(shape), min(shape))))
            q = q * np.sign(np.diag(r))
            value = q if shape[0] >= shape[1] else q.T
        else:
            value = np.full(shape, {"zeros": 0.0, "ones": 1.0}.get(kind, args[0] if args else 0.0))
        params[name] = np.ascontiguousarray(value, dtype=dtype).reshape(shape)   # 0-d kept
    return params
