"""PyTorch integration (the optional extra `cellc[torch]`): a `torch.nn.Module` whose
forward and backward run a compiled cell's kernels, and weight import/export between a
spec's parameters and torch.nn.RNN/LSTM/GRU.

    rnn = cellc.torch.RNN("specs/peephole_lstm.toml", input_size=32, hidden_size=64,
                          num_layers=2, bidirectional=True, dropout=0.1)
    out, (h_n, c_n) = rnn(x)                       # like torch.nn.LSTM
    rnn = cellc.torch.RNN.from_torch(torch_lstm, "specs/lstm.toml")   # same weights

Tensors cross to NumPy with `.numpy()` (no copy when contiguous on the CPU); the work
runs in `cellc.layers.Layer`, whose every step is in the compiled kernels.
"""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
from threadpoolctl import ThreadpoolController
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .layers import Layer

__all__ = ["RNN", "grads_from_torch", "weights_from_torch", "weights_to_torch"]


# ---- weights --------------------------------------------------------------------
def _suffix(layer: int, direction: int) -> str:
    return f"_l{layer}" + ("_reverse" if direction else "")


def _check_kind(cell, rnn: nn.RNNBase) -> None:
    spec = cell.TORCH
    if spec is None:
        raise ValueError(f"{cell.NAME}'s spec has no [torch] table, so its parameters have "
                         "no torch.nn counterpart; add one (see cellc/torchmap.py)")
    kind = type(rnn).__name__
    if kind != spec["module"]:
        raise ValueError(f"{cell.NAME} maps torch.nn.{spec['module']}, not torch.nn.{kind}")
    projects = any(t[0] == "weight_hr" for terms in spec["params"].values() for t in terms)
    if bool(getattr(rnn, "proj_size", 0)) != projects:
        raise ValueError(f"{cell.NAME} maps torch.nn.LSTM "
                         + ("with" if projects else "without") + " proj_size, but this one "
                         + ("has none" if projects else f"has proj_size={rnn.proj_size}"))
    for key, value in spec["options"].items():
        if getattr(rnn, key, value) != value:
            raise ValueError(f"{cell.NAME} maps torch.nn.{kind}({key}={value!r}), but this "
                             f"one has {key}={getattr(rnn, key)!r}")


def _mapped(cell, rnn: nn.RNNBase):
    """(layer parameter name, [(torch tensor or None, its rows, transpose), ...]) for every
    parameter of every layer and direction, as the spec's [torch] table maps them."""
    _check_kind(cell, rnn)
    H = rnn.hidden_size
    for layer in range(rnn.num_layers):
        for direction in range(2 if rnn.bidirectional else 1):
            suffix = _suffix(layer, direction)
            for name, terms in cell.TORCH["params"].items():
                yield name + suffix, [(getattr(rnn, tensor + suffix, None),     # None: bias=False
                                       slice(None) if tensor == "weight_hr"   # one block
                                       else slice(block * H, (block + 1) * H), transpose)
                                      for tensor, block, transpose in terms]


def weights_from_torch(cell, rnn: nn.RNNBase) -> dict[str, np.ndarray]:
    """The parameters of a `Layer` of `cell` (layer names, e.g. `W_xi_l0_reverse`) holding
    the weights of `rnn` (torch.nn.RNN/LSTM/GRU), as the spec's [torch] table maps them."""
    params = {}
    for name, terms in _mapped(cell, rnn):
        parts = []
        for t, rows, transpose in terms:
            if t is not None:
                part = t.detach().cpu().numpy()[rows]
                parts.append(part.T if transpose else part)
        params[name] = np.ascontiguousarray(sum(parts) if parts else np.zeros(
            rnn.hidden_size, rnn.weight_hh_l0.detach().numpy().dtype))
    return params


def grads_from_torch(cell, rnn: nn.RNNBase) -> dict[str, np.ndarray]:
    """The gradients of a `Layer`'s parameters, read off `rnn`'s `.grad`s: a parameter
    that is a sum of torch blocks has each block's gradient, so its first one is read."""
    grads = {}
    for name, [(t, rows, transpose), *_] in _mapped(cell, rnn):
        g = t.grad.detach().numpy()[rows]
        grads[name] = g.T if transpose else g
    return grads


def weights_to_torch(cell, params: dict, rnn: nn.RNNBase) -> None:
    """Copy a `Layer`'s parameters into `rnn` (the inverse of `weights_from_torch`): a
    parameter mapped to a sum of torch blocks goes into the first, the others get zero."""
    with torch.no_grad():
        for p in rnn.parameters():
            p.zero_()
        for name, [(t, rows, transpose), *_] in _mapped(cell, rnn):
            if t is not None:
                value = torch.as_tensor(np.asarray(params[name]))
                t[rows] = value.T if transpose else value


# ---- autograd ---------------------------------------------------------------------
_THREADPOOLS = ThreadpoolController()


def _blas_threads():
    """While torch runs its own thread pool, cellc's BLAS runs on one thread.

    torch's OpenMP workers spin between ops; a multi-threaded OpenBLAS GEMM then waits for
    a core they hold. Measured, a small LSTM training loop (B=64, H=64, Adam): 33 ms per
    batch with both pools at 2 threads, 8.3 ms with BLAS on one. With
    torch.set_num_threads(1), OpenBLAS keeps its own thread count (6.4 ms)."""
    if torch.get_num_threads() > 1:
        return _THREADPOOLS.limit(limits=1, user_api="blas")
    return nullcontext()



def _numpy(t: torch.Tensor | None) -> np.ndarray | None:
    if t is None:
        return None
    if t.device.type != "cpu":
        raise ValueError(f"cellc runs on the CPU; got a tensor on {t.device}")
    a = t.detach().numpy()
    return np.ascontiguousarray(a).reshape(a.shape)     # a scalar parameter stays 0-d


class _LayerFunction(torch.autograd.Function):
    """Forward and backward of a whole `Layer` in one autograd node."""

    @staticmethod
    def forward(ctx, layer, names, lengths, training, seed, x, n_states, *tensors):
        states = dict(zip(layer.cell.STATES, tensors[:n_states]))
        params = dict(zip(names, (_numpy(t) for t in tensors[n_states:])))
        with _blas_threads():
            y, finals, cache = layer.forward(params, _numpy(x),
                                             {k: _numpy(v) for k, v in states.items()},
                                             lengths, training=training, seed=seed)
        ctx.layer, ctx.cache, ctx.names, ctx.n_states = layer, cache, names, n_states
        ctx.set_materialize_grads(False)
        outputs = (torch.from_numpy(y), *(torch.from_numpy(finals[k]) for k in layer.cell.STATES))
        ctx.save_for_backward(*outputs)      # torch then refuses in-place edits of them
        return outputs

    @staticmethod
    def backward(ctx, dy, *d_finals):
        layer = ctx.layer
        ctx.saved_tensors                    # raises if an output was modified in place
        d_states = {k: _numpy(d) for k, d in zip(layer.cell.STATES, d_finals) if d is not None}
        with _blas_threads():
            g = layer.backward(ctx.cache, _numpy(dy), d_states)
        dx = torch.from_numpy(next(iter(g.inputs.values())))
        d0 = [torch.from_numpy(g.states[k]) for k in layer.cell.STATES][:ctx.n_states]
        dp = [torch.from_numpy(g.params[n]) for n in ctx.names]
        return (None, None, None, None, None, dx, None, *d0, *dp)


# ---- the module ---------------------------------------------------------------------
class RNN(nn.Module):
    """A recurrent layer of any compiled cell, used like torch.nn.LSTM/GRU/RNN.

    `cell` is a spec path or a generated module. Inputs are [T, B, input_size] (or
    [B, T, input_size] with `batch_first`) or a PackedSequence. The initial states are
    one tensor, or a tuple in the spec's state order (h, c for an LSTM), each
    [num_layers * num_directions, B, size]; zero when omitted. Returns (output, final
    states) in the same form. `merge="sum"` adds the two directions instead of joining
    them. Parameters are named as in the spec with PyTorch's suffixes (`W_xi_l0`).

    `zoneout` and `recurrent_dropout` (a rate, or rates by state name; see
    `cellc.layers.Layer`) apply in training mode; their masks, like `dropout`'s, are
    drawn from a seed taken from torch's generator, so `torch.manual_seed` replays them."""

    def __init__(self, cell, input_size: int, hidden_size: int, num_layers: int = 1, *,
                 bidirectional: bool = False, batch_first: bool = False, dropout: float = 0.0,
                 merge: str = "concat", proj_size: int = 0, sizes: dict | None = None,
                 dtype=torch.float32, zoneout=0.0, recurrent_dropout=0.0):
        super().__init__()
        self.layer = Layer(cell, num_layers, bidirectional=bidirectional, merge=merge,
                           dropout=dropout, zoneout=zoneout,
                           recurrent_dropout=recurrent_dropout)
        self.zoneout, self.recurrent_dropout = zoneout, recurrent_dropout
        self.cell = self.layer.cell
        self.batch_first = batch_first
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bidirectional, self.dropout = bidirectional, dropout
        self.proj_size = proj_size
        # hidden_size is every state's width, as in torch.nn; proj_size (an LSTMP's P)
        # is the output's, and `sizes` binds any other dimension by name.
        self.sizes = {d: hidden_size for d in self.cell.STATES.values()}
        self.sizes.update({self.layer.input_dim: input_size,
                           self.cell.OUTPUT_DIM: proj_size or hidden_size, **(sizes or {})})
        seed = int(torch.randint(0, 2**31 - 1, ()))      # follows torch.manual_seed
        np_dtype = {torch.float32: np.float32, torch.float64: np.float64}[dtype]
        for name, value in self.layer.init_params(np_dtype, seed, **self.sizes).items():
            self.register_parameter(name, nn.Parameter(torch.from_numpy(value)))

    @classmethod
    def from_torch(cls, rnn: nn.RNNBase, cell) -> "RNN":
        """A cellc layer with the architecture and weights of `rnn` (torch.nn.RNN, LSTM or
        GRU, stacked and/or bidirectional), for a spec whose [torch] table maps it."""
        module = cls(cell, rnn.input_size, rnn.hidden_size, rnn.num_layers,
                     bidirectional=rnn.bidirectional, batch_first=rnn.batch_first,
                     dropout=rnn.dropout, proj_size=getattr(rnn, "proj_size", 0),
                     dtype=rnn.weight_hh_l0.dtype)
        module.load_weights_from(rnn)
        return module

    def load_weights_from(self, rnn: nn.RNNBase) -> None:
        """Overwrite this layer's parameters with `rnn`'s (see `weights_from_torch`)."""
        values = weights_from_torch(self.cell, rnn)
        with torch.no_grad():
            for name, p in self.named_parameters():
                p.copy_(torch.from_numpy(values[name]))

    def to_torch(self) -> nn.RNNBase:
        """A torch.nn layer with this layer's architecture and weights."""
        spec = self.cell.TORCH
        kind = getattr(nn, spec["module"] if spec else "RNN")
        extra = {"proj_size": self.proj_size} if self.proj_size else {}
        rnn = kind(self.input_size, self.hidden_size, self.num_layers,
                   bidirectional=self.bidirectional, batch_first=self.batch_first,
                   dropout=self.dropout, **(spec["options"] if spec else {}), **extra)
        rnn = rnn.to(next(self.parameters()).dtype)
        weights_to_torch(self.cell, {k: v.detach().numpy() for k, v in self.named_parameters()},
                         rnn)
        return rnn

    def forward(self, input, hx=None):
        packed = isinstance(input, PackedSequence)
        lengths = None
        if packed:
            x, lengths_t = pad_packed_sequence(input)          # [T, B, I], caller's order
            lengths = lengths_t.numpy()
        else:
            x = input.transpose(0, 1) if self.batch_first else input
        states = self._states(hx)
        names = [n for n, _ in self.named_parameters()]
        random = self.dropout or self.layer.rates.variant
        seed = int(torch.randint(0, 2**63 - 1, ())) if self.training and random else None
        y, *finals = _LayerFunction.apply(self.layer, names, lengths, self.training, seed,
                                          x.contiguous(), len(states), *states,
                                          *(p for _, p in self.named_parameters()))
        if packed:
            order = input.sorted_indices
            out = pack_padded_sequence(y if order is None else y[:, order],
                                       lengths_t if order is None else lengths_t[order])
            y = PackedSequence(out.data, out.batch_sizes, input.sorted_indices,
                               input.unsorted_indices)
        elif self.batch_first:
            y = y.transpose(0, 1)
        return y, (finals[0] if len(finals) == 1 else tuple(finals))

    def _states(self, hx) -> list[torch.Tensor]:
        if hx is None:
            return []
        hx = [hx] if isinstance(hx, torch.Tensor) else list(hx)
        if len(hx) != len(self.cell.STATES):
            raise ValueError(f"{self.cell.NAME} has states {list(self.cell.STATES)}; "
                             f"got {len(hx)} initial state tensor(s)")
        return [h.contiguous() for h in hx]

    def extra_repr(self) -> str:
        return (f"{self.cell.NAME}, {self.input_size}, {self.hidden_size}, "
                f"num_layers={self.num_layers}, bidirectional={self.bidirectional}, "
                f"batch_first={self.batch_first}, dropout={self.dropout}"
                + (f", zoneout={self.zoneout}" if self.layer.rates.zoneout else "")
                + (f", recurrent_dropout={self.recurrent_dropout}"
                   if self.layer.rates.recurrent_dropout else ""))
