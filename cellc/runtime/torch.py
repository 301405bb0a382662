"""PyTorch integration (the optional extra `cellc[torch]`): `RNN`, a `torch.nn.Module`
that runs a compiled cell's layers, used like torch.nn.LSTM/GRU/RNN.

    rnn = cellc.torch.RNN("specs/peephole_lstm.toml", input_size=32, hidden_size=64,
                          num_layers=2, bidirectional=True, dropout=0.1)
    out, (h_n, c_n) = rnn(x)                       # like torch.nn.LSTM
    rnn = cellc.torch.RNN.from_torch(torch_lstm, "specs/lstm.toml")   # same weights

The layer runs as two custom operators (`torch_ops.py`), so torch.compile, DDP and
parametrizations see an ordinary operator with explicit parameter inputs. The module
pickles as its spec and options (deepcopy, torch.save, AveragedModel, mp.spawn).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import torch_ops
from .layers import Layer
from .torch_weights import grads_from_torch, weights_from_torch, weights_to_torch

__all__ = ["RNN", "grads_from_torch", "set_blas_threads", "weights_from_torch",
           "weights_to_torch"]

set_blas_threads = torch_ops.set_blas_threads
DTYPES = (torch.float32, torch.float64)
DEVICES = ("cpu", "cuda")      # cuda: the cell's CUDA target (numba-cuda), per call


class RNN(nn.Module):
    """A recurrent layer of any compiled cell, used like torch.nn.LSTM/GRU/RNN.

    `cell` is a spec path or a generated module; the other arguments are torch.nn.LSTM's,
    in its order (see the README's table). Inputs are [T, B, input_size] ([B, T, ...]
    with `batch_first`), unbatched [T, input_size], or a PackedSequence. The initial
    states are one tensor, or a tuple in the spec's state order (h, c for an LSTM), each
    [num_layers * num_directions, B, size]; zero when omitted. Returns (output, final
    states) in the same form.

    Beyond torch.nn: `merge="sum"` adds the two directions instead of joining them;
    `sizes` binds the spec's other dimensions by name (`sizes={"M": 16}`); `zoneout`
    and `recurrent_dropout` (a rate, or rates by state name; see `cellc.layers.Layer`)
    apply in training, their masks, like `dropout`'s, drawn from a seed taken from
    torch's generator, so `torch.manual_seed` replays them. Parameters are named as in
    the spec with PyTorch's suffixes (`W_xi_l0`); with `bias=False` the spec's biases
    (the module's BIASES) are zero buffers, not parameters."""

    def __init__(self, cell, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, device=None, dtype=None,
                 *, merge: str = "concat", sizes: dict | None = None, zoneout=0.0,
                 recurrent_dropout=0.0):
        super().__init__()
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if dtype not in DTYPES:
            raise ValueError(f"cellc.torch.RNN runs float32 and float64 "
                             f"(torch.float32, torch.float64), not {dtype}")
        if device is not None and torch.device(device).type not in DEVICES:
            raise ValueError(f"cellc.torch.RNN runs on the CPU and on CUDA GPUs; device={device!r} "
                             "is neither (pass 'cpu', 'cuda' or leave it out)")
        self.layer = torch_ops.register(Layer(cell, num_layers, bidirectional=bidirectional,
                                              merge=merge, dropout=dropout, zoneout=zoneout,
                                              recurrent_dropout=recurrent_dropout))
        self._key = self.layer.key
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bool(bias), batch_first, dropout
        self.bidirectional, self.proj_size, self.merge = bidirectional, proj_size, merge
        self.zoneout, self.recurrent_dropout = zoneout, recurrent_dropout
        self.sizes = self._sizes(input_size, hidden_size, proj_size, sizes)
        seed = int(torch.randint(0, 2**31 - 1, ()))      # follows torch.manual_seed
        np_dtype = {torch.float32: "float32", torch.float64: "float64"}[dtype]
        biases = set() if self.bias else {
            new for layer in range(num_layers) for direction in range(self.layer.directions)
            for old, new in self.layer.names(layer, direction).items() if old in self.cell.BIASES}
        for name, value in self.layer.init_params(np_dtype, seed, **self.sizes).items():
            if name in biases:
                self.register_buffer(name, torch.zeros(value.shape, dtype=dtype),
                                     persistent=False)
            else:
                self.register_parameter(name, nn.Parameter(torch.from_numpy(value)))
        if device is not None:
            self.to(device)

    @property
    def cell(self):
        """The compiled cell (a generated module)."""
        return self.layer.cell

    def _sizes(self, input_size, hidden_size, proj_size, sizes) -> dict:
        """Every dimension's size: hidden_size is every state's width as in torch.nn,
        proj_size the output's where it has its own dimension (an LSTMP's P, which is
        hidden_size without proj_size), `sizes` the rest."""
        cell = self.cell
        if not (isinstance(proj_size, int) and not isinstance(proj_size, bool)
                and proj_size >= 0):
            raise ValueError(f"proj_size must be a non-negative integer, not {proj_size!r}")
        if proj_size and all(d in (cell.OUTPUT_DIM, "1") for d in cell.STATES.values()):
            raise ValueError(f"proj_size={proj_size}: {cell.NAME}'s output and states share the "
                             f"dimension {cell.OUTPUT_DIM}, so there is no projection to size; "
                             "use a spec whose output is a projected state, e.g. "
                             "specs/lstmp.toml (h' = (o * tanh(c')) @ W_hr)")
        bound = {d: hidden_size for d in (*cell.STATES.values(), cell.OUTPUT_DIM) if d != "1"}
        bound.update({self.layer.input_dim: input_size, **(sizes or {})})
        if proj_size:
            bound[cell.OUTPUT_DIM] = proj_size
        missing = [d for d in cell.DIMS if d not in bound]
        if missing:
            raise ValueError(f"{cell.NAME} has dimensions {missing} that neither input_size "
                             "nor hidden_size sets; pass their sizes, e.g. cellc.torch.RNN(..., "
                             f"sizes={ {d: 16 for d in missing} })")
        unknown = [d for d in sizes or {} if d not in cell.DIMS]
        if unknown:
            raise ValueError(f"sizes: {cell.NAME} has no dimension {unknown[0]!r}; its "
                             f"dimensions are {list(cell.DIMS)}")
        return bound

    def __setstate__(self, state):
        super().__setstate__(state)
        self.layer = torch_ops.register(self.layer)    # in a new process, the operators find it

    # ---- torch.nn interop ------------------------------------------------------------
    @classmethod
    def from_torch(cls, rnn: nn.RNNBase, cell) -> "RNN":
        """A cellc layer with the architecture and weights of `rnn` (torch.nn.RNN, LSTM or
        GRU, stacked and/or bidirectional, with or without biases), for a spec whose
        [torch] table maps it."""
        module = cls(cell, rnn.input_size, rnn.hidden_size, rnn.num_layers, rnn.bias,
                     rnn.batch_first, rnn.dropout, rnn.bidirectional,
                     getattr(rnn, "proj_size", 0), dtype=rnn.weight_hh_l0.dtype,
                     device=rnn.weight_hh_l0.device)
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
        if self.merge != "concat":
            raise ValueError(f"merge={self.merge!r} has no torch.nn counterpart (torch.nn "
                             "joins the two directions); only merge='concat' exports")
        spec = self.cell.TORCH
        kind = getattr(nn, spec["module"] if spec else "RNN")
        extra = {"proj_size": self.proj_size} if self.proj_size else {}
        rnn = kind(self.input_size, self.hidden_size, self.num_layers, bias=self.bias,
                   bidirectional=self.bidirectional, batch_first=self.batch_first,
                   dropout=self.dropout, **(spec["options"] if spec else {}), **extra)
        rnn = rnn.to(self._weights()[0].dtype)
        weights_to_torch(self.cell, {n: w.detach().cpu().numpy() for n, w in
                                     zip(self.layer.param_names(), self._weights())}, rnn)
        return rnn.to(self._weights()[0].device)

    def flatten_parameters(self) -> None:
        """A no-op, as for torch.nn.LSTM on the CPU: cellc concatenates its weights itself."""

    # ---- running ---------------------------------------------------------------------
    def _weights(self) -> list[torch.Tensor]:
        """The parameters in the layer's order, read by name, so that a parametrization
        (`register_parametrization`, `weight_norm`) gives its computed weight."""
        return [getattr(self, n) for n in self.layer.param_names()]

    def forward(self, input, hx=None, **inputs):
        """`inputs`: the cell's other inputs by their spec names, each shaped like `input`
        (a PackedSequence if it is one), e.g. `rnn(x, t=stamps)` for a phased LSTM."""
        packed, unbatched = isinstance(input, PackedSequence), False
        lengths = None
        extras = self._extras(inputs)
        if packed:
            x, lengths_t = pad_packed_sequence(input)          # [T, B, I], caller's order
            lengths = lengths_t
            extras = [pad_packed_sequence(e)[0] if isinstance(e, PackedSequence) else e
                      for e in extras]
        else:
            x = input
            unbatched = x.dim() == 2
            if unbatched:
                x, extras = x.unsqueeze(1), [e.unsqueeze(1) for e in extras]
                hx = None if hx is None else (hx.unsqueeze(1) if isinstance(hx, torch.Tensor)
                                              else tuple(h.unsqueeze(1) for h in hx))
            elif x.dim() != 3:
                raise ValueError(f"input must be [T, B, {self.input_size}] (or [B, T, ...] "
                                 "with batch_first, or unbatched [T, "
                                 f"{self.input_size}]), not shape {tuple(x.shape)}")
            elif self.batch_first:
                x, extras = x.transpose(0, 1), [e.transpose(0, 1) for e in extras]
        weights = self._weights()
        states = self._states(hx)
        self._check(x, weights, states)
        for name, e in zip(self.layer.extra_inputs, extras):
            if e.dim() != 3 or e.shape[:2] != x.shape[:2]:
                raise ValueError(f"input {name!r} must have the steps and batch of `input` "
                                 f"{tuple(x.shape[:2])}, not shape {tuple(e.shape)}")
        random = self.dropout or self.layer.rates.variant
        seed = (torch.randint(0, 2**62, ()) if self.training and random
                else torch.zeros((), dtype=torch.int64))
        need_grad = torch.is_grad_enabled() and any(
            t.requires_grad for t in (x, *extras, *states, *weights))
        y, finals, _ = torch.ops.cellc.layer_forward(
            self._key, x.contiguous(), [e.to(x.dtype).contiguous() for e in extras], states,
            weights, lengths, seed, self.training, need_grad)
        if packed:
            order = input.sorted_indices
            out = pack_padded_sequence(y if order is None else y[:, order],
                                       lengths_t if order is None else lengths_t[order])
            y = PackedSequence(out.data, out.batch_sizes, input.sorted_indices,
                               input.unsorted_indices)
        elif unbatched:
            y, finals = y.squeeze(1), [f.squeeze(1) for f in finals]
        elif self.batch_first:
            y = y.transpose(0, 1)
        return y, (finals[0] if len(finals) == 1 else tuple(finals))

    def _extras(self, inputs: dict) -> list:
        wanted = self.layer.extra_inputs
        if sorted(inputs) != sorted(wanted):
            raise ValueError(f"{self.cell.NAME} reads the inputs {[self.layer.input, *wanted]}: "
                             "pass the first as `input` and "
                             + (", ".join(f"{k}=..." for k in wanted) if wanted else "no other")
                             + f" by name; got {sorted(inputs) or 'none'}")
        return [inputs[k] for k in wanted]

    def _states(self, hx) -> list[torch.Tensor]:
        if hx is None:
            return []
        hx = [hx] if isinstance(hx, torch.Tensor) else list(hx)
        if len(hx) != len(self.cell.STATES):
            raise ValueError(f"{self.cell.NAME} has states {list(self.cell.STATES)}; "
                             f"got {len(hx)} initial state tensor(s)")
        return [h.contiguous() for h in hx]

    def _check(self, x, weights, states) -> None:
        """What torch users get wrong, said in torch's terms before any kernel runs."""
        dtype, device = weights[0].dtype, weights[0].device
        for what, t in (("input", x), ("parameters", weights[0]),
                        *(("initial states", s) for s in states)):
            if t.device.type not in DEVICES:
                raise ValueError(f"cellc runs on the CPU and on CUDA GPUs; the {what} are on "
                                 f"{t.device}")
            if t.device != device:
                raise ValueError(f"the {what} are on {t.device} but the parameters are on "
                                 f"{device}; move them with .to({str(device)!r})")
            if t.dtype not in DTYPES:
                raise ValueError(f"cellc runs float32 and float64; the {what} are {t.dtype} "
                                 "(convert the module with .float() or .double())")
        if x.dtype != dtype:
            raise ValueError(f"the input is {x.dtype} but the parameters are {dtype}; "
                             f"pass input.to({dtype})")

    def extra_repr(self) -> str:
        return (f"{self.cell.NAME}, {self.input_size}, {self.hidden_size}, "
                f"num_layers={self.num_layers}, bias={self.bias}, "
                f"bidirectional={self.bidirectional}, batch_first={self.batch_first}, "
                f"dropout={self.dropout}"
                + (f", proj_size={self.proj_size}" if self.proj_size else "")
                + (f", merge={self.merge!r}" if self.merge != "concat" else "")
                + (f", zoneout={self.zoneout}" if self.layer.rates.zoneout else "")
                + (f", recurrent_dropout={self.recurrent_dropout}"
                   if self.layer.rates.recurrent_dropout else ""))
