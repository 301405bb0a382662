"""Weight import and export between a spec's parameters and torch.nn.RNN/LSTM/GRU, as
the spec's `[torch]` table maps them (see `cellc/frontend/torchmap.py`)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["grads_from_torch", "weights_from_torch", "weights_to_torch"]


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
            rnn.hidden_size, rnn.weight_hh_l0.detach().cpu().numpy().dtype))
    return params


def grads_from_torch(cell, rnn: nn.RNNBase) -> dict[str, np.ndarray]:
    """The gradients of a `Layer`'s parameters, read off `rnn`'s `.grad`s: a parameter
    that is a sum of torch blocks has each block's gradient, so its first one is read."""
    grads = {}
    for name, [(t, rows, transpose), *_] in _mapped(cell, rnn):
        g = t.grad.detach().cpu().numpy()[rows]
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
