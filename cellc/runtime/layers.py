"""Recurrent layers from any compiled cell: stacked, bidirectional, variable-length.

A `Layer` drives a generated module (see the README's "module contract"): one call of its
`forward`/`backward` per layer and direction, so every step of every layer runs in the
compiled kernels. Between layers there is only NumPy work over whole arrays: joining the
two directions, dropout, and reversing each sequence within its own length.

Zoneout and recurrent dropout (`cellc/regularizers.py`) run the cell's variant that reads
their masks as inputs; the layer draws the masks, per layer and direction, from the
seeded generator that also draws the dropout between layers.

A layer of the CUDA target (`target="cuda"`) runs the cell's CUDA modules over torch
tensors, the work between layers in torch; masks are drawn on the host, as on the CPU,
and copied over.

Parameters are one flat dict, named as in the spec with PyTorch's suffixes: `W_xi_l0`,
`W_xi_l0_reverse`, `W_xi_l1`, ... Initial and final states are stacked like PyTorch's
`h_0`/`h_n`: `[num_layers * num_directions, B, size]`, index `layer * num_directions +
direction`.
"""
from __future__ import annotations

import hashlib
from collections import namedtuple
from types import ModuleType

import numpy as np

from .regularizers import Rates

Gradients = namedtuple("Gradients", ["params", "inputs", "states"])


def _is_tensor(a) -> bool:
    return type(a).__module__.split(".")[0] == "torch"


def _contiguous(a):
    return a.contiguous() if _is_tensor(a) else np.ascontiguousarray(a)


def _swap(a):
    """[T, B, ...] <-> [B, T, ...], contiguous."""
    return _contiguous(a.transpose(0, 1) if _is_tensor(a) else np.swapaxes(a, 0, 1))


def _joined(parts: list, axis: int):
    if _is_tensor(parts[0]):
        import torch
        return torch.cat(parts, dim=axis)
    return np.concatenate(parts, axis=axis)


def _stacked(parts: list):
    if _is_tensor(parts[0]):
        import torch
        return torch.stack(parts)
    return np.stack(parts)


def _like(host: np.ndarray, a):
    """A host array (a mask) where `a` lives: `a`'s device, for a tensor."""
    if _is_tensor(a):
        import torch
        return torch.from_numpy(host).to(a.device)
    return host


def _reverse(x, lengths: np.ndarray | None):
    """Each sequence of x [T, B, ...] reversed within its own length (padding stays)."""
    if lengths is None:
        return x.flip(0) if _is_tensor(x) else np.ascontiguousarray(x[::-1])
    T, B = x.shape[:2]
    t = np.arange(T)[:, None]
    source = np.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)     # [T, B] steps
    rows = (source * B + np.arange(B)).ravel()         # whole rows: a fast gather of memcpys
    if _is_tensor(x):
        return x.reshape(T * B, -1).index_select(0, _like(rows, x)).reshape(x.shape)
    return np.take(x.reshape(T * B, -1), rows, axis=0).reshape(x.shape)


def _tensor(device_array):
    """A Numba device array (a CUDA module's init_params) as a torch tensor on its device:
    shared on a GPU, copied from the simulator's."""
    import torch
    if hasattr(device_array, "__cuda_array_interface__"):
        return torch.as_tensor(device_array, device="cuda")
    return torch.from_numpy(device_array.copy_to_host())


def _is_array(a, target: str) -> bool:
    return _is_tensor(a) if target == "cuda" else isinstance(a, np.ndarray)


def _array_kind(target: str) -> str:
    return "torch tensor" if target == "cuda" else "numpy array"


def _rebuild(spec: tuple[str, str], options: dict) -> "Layer":
    from .loader import from_spec
    return Layer(from_spec(*spec, options.get("target", "cpu")), **options)


class Layer:
    """`num_layers` of a compiled cell, optionally bidirectional, over [T, B, I] batches
    (or [B, T, I] with `batch_first`), with dropout between layers in training.

    `merge` joins the two directions' outputs: "concat" (PyTorch) or "sum" (oneDNN's
    bidirectional_sum).

    `zoneout` (Krueger et al. 2016) and `recurrent_dropout` (Gal & Ghahramani 2016, one
    mask per sequence) regularize every layer: a rate, or a dict of rates by state name
    (`zoneout={"c": 0.5, "h": 0.05}`). A rate for all applies zoneout to every state,
    recurrent dropout to every state a matrix product reads. In training the masks are
    random; in evaluation zoneout uses its expectation and recurrent dropout is off."""

    def __init__(self, cell: ModuleType | str, num_layers: int = 1, *,
                 bidirectional: bool = False, merge: str = "concat", dropout: float = 0.0,
                 batch_first: bool = False, zoneout=0.0, recurrent_dropout=0.0,
                 target: str = "cpu"):
        if target not in ("cpu", "cuda"):
            raise ValueError(f"target must be 'cpu' or 'cuda', not {target!r}")
        if isinstance(cell, str) or hasattr(cell, "__fspath__"):
            from .loader import load
            cell = load(cell, target=target)
        elif getattr(cell, "TARGET", "cpu") != target:
            from .loader import for_target
            cell = for_target(cell, target)
        if not (isinstance(num_layers, int) and not isinstance(num_layers, bool)
                and num_layers >= 1):
            raise ValueError(f"num_layers must be a positive integer, not {num_layers!r}")
        if not isinstance(merge, str) or merge not in ("concat", "sum"):
            raise ValueError(f"merge must be 'concat' or 'sum', not {merge!r}")
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
            raise ValueError(f"dropout must be a number in [0, 1), not {dropout!r}")
        self._options = dict(num_layers=num_layers, bidirectional=bidirectional, merge=merge,
                             dropout=dropout, batch_first=batch_first, zoneout=zoneout,
                             recurrent_dropout=recurrent_dropout, target=target)
        self.target = target
        self._siblings: dict[str, Layer] = {}      # this layer for other targets (`on`)
        self.cell, self.num_layers = cell, num_layers
        self.directions = 2 if bidirectional else 1
        self.merge, self.dropout, self.batch_first = merge, float(dropout), batch_first
        self.input, *self.extra_inputs = cell.INPUTS       # the layer below feeds the first
        self.input_dim = cell.INPUTS[self.input]
        shared = [k for k in self.extra_inputs if cell.INPUTS[k] == self.input_dim]
        if shared and num_layers > 1:
            raise ValueError(f"{cell.NAME}'s inputs {[self.input, *shared]} share the dimension "
                             f"{self.input_dim}, which the layers above the first resize; "
                             "give the other inputs their own dimension, or stack one layer")
        self.rates = Rates.resolve(cell, zoneout, recurrent_dropout)
        self.regularized = cell
        if self.rates.variant:
            from .loader import variant
            self.regularized = variant(cell, self.rates.variant)

    def __reduce__(self):
        """Pickled as the spec the cell was compiled from and the layer's options, so a
        copy (deepcopy, torch.save, a spawned process) reloads the compiled cell."""
        from .loader import spec_of
        return _rebuild, (spec_of(self.cell), self._options)

    @property
    def key(self) -> str:
        """A name for this layer's cell and options, the same in every process."""
        options = {k: v for k, v in self._options.items() if (k, v) != ("target", "cpu")}
        return hashlib.sha256(repr((self.cell.SPEC_SHA256, sorted(options.items())))
                              .encode()).hexdigest()[:24]

    def on(self, target: str) -> "Layer":
        """This layer for another target (the same cell and options), made once."""
        if target == self.target:
            return self
        if target not in self._siblings:
            self._siblings[target] = Layer(self.cell, **dict(self._options, target=target))
        return self._siblings[target]

    # ---- parameters --------------------------------------------------------------
    def param_names(self) -> list[str]:
        """Every layer's and direction's parameter names, layer by layer."""
        return [n for layer in range(self.num_layers) for direction in range(self.directions)
                for n in self.names(layer, direction).values()]

    def names(self, layer: int, direction: int) -> dict[str, str]:
        """The cell's parameter names -> this layer's and direction's names."""
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        return {p: p + suffix for p in self.cell.PARAMS}

    def sizes(self, sizes: dict[str, int], layer: int) -> dict[str, int]:
        """The cell's sizes in `layer`: above the first, the input is the layer below."""
        if layer == 0:
            return dict(sizes)
        out = sizes[self.cell.OUTPUT_DIM] * (self.directions if self.merge == "concat" else 1)
        if self.input_dim in self.cell.STATES.values() and sizes[self.input_dim] != out:
            raise ValueError(f"{self.cell.NAME}'s input and state share the size "
                             f"{self.input_dim}, so layer {layer} cannot take the "
                             f"{out} outputs below it; use merge='sum' or one direction")
        return dict(sizes, **{self.input_dim: out})

    def init_params(self, dtype=np.float32, seed: int = 0, **sizes) -> dict[str, np.ndarray]:
        """Parameters of every layer and direction for the first layer's `sizes`
        (e.g. I=32, H=64), each initialised by the cell's own `init_params`."""
        params = {}
        for layer in range(self.num_layers):
            for direction in range(self.directions):
                part = self.cell.init_params(dtype=dtype, seed=seed + 1000 * layer + direction,
                                             **self.sizes(sizes, layer))
                params.update({new: part[old] if self.target == "cpu" else _tensor(part[old])
                               for old, new in self.names(layer, direction).items()})
        return params

    # ---- running -------------------------------------------------------------------
    def forward(self, params: dict, x: np.ndarray, states: dict | None = None,
                lengths=None, *, training: bool = False, seed=None, need_grad: bool = True):
        """Run all layers. Returns (outputs, final states, cache).

        `need_grad=False` runs every cell's forward that saves nothing (inference):
        the cache is then None.

        `states` maps each state name to `[num_layers * num_directions, B, size]` (zeros
        when omitted); `lengths` [B] gives each sequence's length in a padded batch.
        In training, all masks (dropout, zoneout, recurrent dropout) come from
        `np.random.default_rng(seed)`: the same seed gives the same masks.

        A cell of several inputs (a time stamp beside x) takes a dict of them: the first
        is the layer's input, fed by the layer below above the first layer; every layer
        and direction reads the others as given (reversed with the sequence)."""
        x, extra = self._inputs(x)
        self._check(params, x, states)
        if self.batch_first:
            x = _swap(x)
            extra = {k: _swap(v) for k, v in extra.items()}
        T, B = x.shape[:2]
        if lengths is not None:      # checked by the cell's forward (layer 0 runs first)
            lengths = np.asarray(lengths.cpu() if _is_tensor(lengths) else lengths)
        states = dict(states or {})
        random = self.dropout or self.rates.variant
        rng = np.random.default_rng(seed) if training and random else None
        # evaluation without zoneout runs the cell as written (no masks to multiply)
        module = self.regularized if training or self.rates.zoneout else self.cell
        finals = {k: [] for k in self.cell.STATES}
        caches, masks = [], []
        for layer in range(self.num_layers):
            if rng is not None and self.dropout and layer > 0:
                dtype = self._dtype(x)
                mask = (rng.random(tuple(x.shape)) >= self.dropout).astype(dtype)
                mask /= dtype.type(1 - self.dropout)
                mask = _like(mask, x)
                x = x * mask
                masks.append(mask)
            outs = []
            for direction in range(self.directions):
                p = {old: params[new] for old, new in self.names(layer, direction).items()}
                s = {k: self._state(v, layer, direction, B) for k, v in states.items()}
                xin = {self.input: x, **extra}
                if direction:
                    xin = {k: _reverse(v, lengths) for k, v in xin.items()}
                if module is not self.cell:
                    widths = self._widths(p, xin[self.input], s)
                    xin.update({k: _like(m, x) for k, m in
                                self.rates.masks(T, B, widths, self._dtype(x), rng).items()})
                y, final, cache = module.forward(p, xin, s, lengths=lengths,
                                                 need_grad=need_grad)
                outs.append(_reverse(y, lengths) if direction else y)
                caches.append((module, cache))
                for k in finals:
                    finals[k].append(final[k])
            x = outs[0] if self.directions == 1 else (
                _joined(outs, 2) if self.merge == "concat" else outs[0] + outs[1])
        finals = {k: _stacked(v) for k, v in finals.items()}
        y = _swap(x) if self.batch_first else x
        if not need_grad:
            return y, finals, None
        return y, finals, {"caches": caches, "masks": masks, "lengths": lengths, "B": B,
                           "shape": tuple(y.shape)}

    @staticmethod
    def _dtype(x) -> np.dtype:
        return np.dtype(str(x.dtype).replace("torch.", "")) if _is_tensor(x) else x.dtype

    def _inputs(self, x) -> tuple[np.ndarray, dict]:
        """The layer's input and the cell's other inputs, from an array or a dict."""
        if not self.extra_inputs and not isinstance(x, dict):
            return x, {}
        names = [self.input, *self.extra_inputs]
        if not isinstance(x, dict) or sorted(x) != sorted(names):
            raise ValueError(f"{self.cell.NAME} reads the inputs {names} at each step; pass a "
                             f"dict of them, each [T, B, size], not "
                             f"{sorted(x) if isinstance(x, dict) else type(x).__name__}")
        for k in self.extra_inputs:
            if not _is_array(x[k], self.target) or x[k].ndim != 3:
                raise ValueError(f"input {k!r} must be a 3-D {_array_kind(self.target)}, not "
                                 f"{getattr(x[k], 'shape', type(x[k]).__name__)}")
        return x[self.input], {k: x[k] for k in self.extra_inputs}

    def _check(self, params, x, states):
        """What the layer itself reads, checked before any cell runs (the cell's own
        forward checks the rest): ValueError, never a TypeError or KeyError from inside."""
        if not isinstance(params, dict):
            raise ValueError("params must be a dict of arrays, as init_params returns")
        names = self.param_names()
        missing, extra = [n for n in names if n not in params], [n for n in params if n not in names]
        if missing or extra:
            raise ValueError(f"params: missing {missing}, unexpected {extra}")
        if not _is_array(x, self.target) or x.ndim != 3:
            raise ValueError(f"x must be a 3-D {_array_kind(self.target)} ([T, B, {self.input_dim}]"
                             f"{', batch first' if self.batch_first else ''}), not "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        if states is not None and not isinstance(states, dict):
            raise ValueError(f"states must be a dict keyed {list(self.cell.STATES)} (or None), "
                             f"not {type(states).__name__}")
        unknown = [k for k in states or {} if k not in self.cell.STATES]
        if unknown:
            raise ValueError(f"unknown states {unknown}; this cell's are {list(self.cell.STATES)}")
        for k, v in (states or {}).items():
            if not _is_array(v, self.target):
                raise ValueError(f"states[{k!r}] must be a {_array_kind(self.target)}, "
                                 f"not {type(v).__name__}")

    def _widths(self, params: dict, x: np.ndarray, states: dict) -> dict[str, int]:
        """Each state's size, as the module will bind it: from the parameters' shapes,
        the input and the initial states (for the masks, drawn before the module runs)."""
        sizes = self._sizes({n: tuple(params[n].shape) for n in self.cell.PARAMS}, x.shape[-1],
                            {k: v.shape[-1] for k, v in states.items()})
        return {s: sizes[d] for s, d in self.cell.STATES.items()}

    def _sizes(self, shapes: dict, input_width: int, state_widths: dict) -> dict[str, int]:
        """Every dimension's size the first layer binds, from its parameters' shapes (the
        cell's names), the input's width and the widths of the initial states given."""
        sizes = {"1": 1, self.input_dim: input_width}
        for name, dims in self.cell.PARAMS.items():
            sizes.update(zip(dims, shapes[name]))
        sizes.update((self.cell.STATES[k], w) for k, w in state_widths.items())
        missing = [d for d in (*self.cell.STATES.values(), self.cell.OUTPUT_DIM)
                   if d not in sizes]
        if missing:
            raise ValueError(f"cannot tell the size of {missing} from the parameters; "
                             "pass initial states")
        return sizes

    def output_shapes(self, shapes: dict, T: int, B: int, input_width: int,
                      state_widths: dict | None = None):
        """The shapes `forward` returns, from the parameters' shapes (layer names) alone,
        without running anything: (outputs [T, B, width], {state: [L * D, B, size]})."""
        cell_shapes = {old: shapes[new] for old, new in self.names(0, 0).items()}
        sizes = self._sizes(cell_shapes, input_width, state_widths or {})
        width = sizes[self.cell.OUTPUT_DIM] * (self.directions if self.merge == "concat" else 1)
        stacked = self.num_layers * self.directions
        return ((T, B, width) if not self.batch_first else (B, T, width),
                {k: (stacked, B, sizes[d]) for k, d in self.cell.STATES.items()})

    def _state(self, v, layer, direction, B):
        k = layer * self.directions + direction
        if v.ndim != 3 or v.shape[0] != self.num_layers * self.directions or v.shape[1] != B:
            raise ValueError(f"initial states must be [num_layers * num_directions = "
                             f"{self.num_layers * self.directions}, B = {B}, size], "
                             f"got shape {tuple(v.shape)}")
        return _contiguous(v[k])

    def backward(self, cache: dict, d_outputs=None, d_states=None) -> Gradients:
        """Gradients for every parameter (layer names), the input and the initial states
        (stacked like the states), given the upstream gradients of the outputs and of
        the final states (either may be omitted)."""
        if (not isinstance(cache, dict)
                or sorted(cache) != ["B", "caches", "lengths", "masks", "shape"]
                or not isinstance(cache["caches"], list)
                or len(cache["caches"]) != self.num_layers * self.directions):
            raise ValueError("cache is not what this layer's forward returned; pass it unchanged")
        lengths, caches, masks = cache["lengths"], cache["caches"], cache["masks"]
        dy = d_outputs
        if dy is not None:
            if not _is_array(dy, self.target) or tuple(dy.shape) != cache["shape"]:
                raise ValueError(f"d_outputs must be a {_array_kind(self.target)} of the outputs' "
                                 f"shape {cache['shape']}, not {getattr(dy, 'shape', type(dy).__name__)}")
            if self.batch_first:
                dy = dy.transpose(0, 1) if _is_tensor(dy) else np.swapaxes(dy, 0, 1)
        if d_states is not None and not isinstance(d_states, dict):
            raise ValueError(f"d_states must be a dict keyed {list(self.cell.STATES)} (or None), "
                             f"not {type(d_states).__name__}")
        d_states = dict(d_states or {})
        for k, v in d_states.items():
            if k not in self.cell.STATES or not _is_array(v, self.target) or v.ndim != 3 \
                    or v.shape[0] != self.num_layers * self.directions:
                raise ValueError(f"d_states[{k!r}] must be a state of this cell, stacked "
                                 f"[{self.num_layers * self.directions}, B, size]")
        grads, d0 = {}, {k: [None] * len(caches) for k in self.cell.STATES}
        d_extra = {}                       # the other inputs: every layer's and direction's
        for layer in reversed(range(self.num_layers)):
            dx = None
            for direction in range(self.directions):
                k = layer * self.directions + direction
                part = None
                if dy is not None:
                    part = dy
                    if self.directions == 2 and self.merge == "concat":
                        width = dy.shape[2] // 2
                        part = dy[..., direction * width:(direction + 1) * width]
                    part = _reverse(part, lengths) if direction else _contiguous(part)
                ds = {s: _contiguous(v[k]) for s, v in d_states.items()}
                module, run = caches[k]
                g = module.backward(run, part, ds)
                grads.update({new: g.params[old]
                              for old, new in self.names(layer, direction).items()})
                for s in self.cell.STATES:
                    d0[s][k] = g.states[s]
                for name in self.extra_inputs:
                    if name in g.inputs:
                        gn = _reverse(g.inputs[name], lengths) if direction else g.inputs[name]
                        d_extra[name] = d_extra[name] + gn if name in d_extra else gn
                gx = g.inputs[self.input]
                gx = _reverse(gx, lengths) if direction else gx
                dx = gx if dx is None else dx + gx
            if layer > 0 and masks:
                dx = dx * masks[layer - 1]
            dy = dx
        inputs = {self.input: dy, **d_extra}
        if self.batch_first:
            inputs = {k: _swap(v) for k, v in inputs.items()}
        return Gradients(grads, inputs, {s: _stacked(v) for s, v in d0.items()})
