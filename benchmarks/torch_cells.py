"""The benchmark cells written as a PyTorch user would: a Python loop over time steps
with autograd, one matmul per gate and input. Scriptable with torch.jit.script.
Parameters are passed with cellc's names (row-vector convention, `x @ W`)."""
from typing import Dict, List, Tuple

import torch
from torch import Tensor


def lstm(x: Tensor, s: List[Tensor], p: Dict[str, Tensor]) -> Tuple[Tensor, List[Tensor]]:
    h, c = s[0], s[1]
    ys = []
    for t in range(x.shape[0]):
        xt = x[t]
        i = torch.sigmoid(xt @ p["W_xi"] + h @ p["W_hi"] + p["b_i"])
        f = torch.sigmoid(xt @ p["W_xf"] + h @ p["W_hf"] + p["b_f"])
        g = torch.tanh(xt @ p["W_xg"] + h @ p["W_hg"] + p["b_g"])
        o = torch.sigmoid(xt @ p["W_xo"] + h @ p["W_ho"] + p["b_o"])
        c = f * c + i * g
        h = o * torch.tanh(c)
        ys.append(h)
    return torch.stack(ys), [h, c]


def peephole_lstm(x: Tensor, s: List[Tensor], p: Dict[str, Tensor]) -> Tuple[Tensor, List[Tensor]]:
    h, c = s[0], s[1]
    ys = []
    for t in range(x.shape[0]):
        xt = x[t]
        i = torch.sigmoid(xt @ p["W_xi"] + h @ p["W_hi"] + p["p_i"] * c + p["b_i"])
        f = torch.sigmoid(xt @ p["W_xf"] + h @ p["W_hf"] + p["p_f"] * c + p["b_f"])
        g = torch.tanh(xt @ p["W_xg"] + h @ p["W_hg"] + p["b_g"])
        c = f * c + i * g
        o = torch.sigmoid(xt @ p["W_xo"] + h @ p["W_ho"] + p["p_o"] * c + p["b_o"])
        h = o * torch.tanh(c)
        ys.append(h)
    return torch.stack(ys), [h, c]


def gru(x: Tensor, s: List[Tensor], p: Dict[str, Tensor]) -> Tuple[Tensor, List[Tensor]]:
    h = s[0]
    ys = []
    for t in range(x.shape[0]):
        xt = x[t]
        r = torch.sigmoid(xt @ p["W_xr"] + h @ p["W_hr"] + p["b_r"])
        z = torch.sigmoid(xt @ p["W_xz"] + h @ p["W_hz"] + p["b_z"])
        n = torch.tanh(xt @ p["W_xn"] + p["b_xn"] + r * (h @ p["W_hn"] + p["b_hn"]))
        h = (1 - z) * n + z * h
        ys.append(h)
    return torch.stack(ys), [h]


def gru_cho(x: Tensor, s: List[Tensor], p: Dict[str, Tensor]) -> Tuple[Tensor, List[Tensor]]:
    h = s[0]
    ys = []
    for t in range(x.shape[0]):
        xt = x[t]
        r = torch.sigmoid(xt @ p["W_xr"] + h @ p["W_sr"] + p["b_r"])
        z = torch.sigmoid(xt @ p["W_xz"] + h @ p["W_sz"] + p["b_z"])
        u = torch.tanh(xt @ p["W_xs"] + (r * h) @ p["W_ss"] + p["b_s"])
        h = (1 - z) * h + z * u
        ys.append(h)
    return torch.stack(ys), [h]


def elman(x: Tensor, s: List[Tensor], p: Dict[str, Tensor]) -> Tuple[Tensor, List[Tensor]]:
    h = s[0]
    ys = []
    for t in range(x.shape[0]):
        h = torch.tanh(x[t] @ p["W_x"] + h @ p["W_h"] + p["b"])
        ys.append(h)
    return torch.stack(ys), [h]


CELLS = {"lstm": lstm, "peephole_lstm": peephole_lstm, "gru": gru, "gru_cho": gru_cho,
         "elman": elman}

# torch.nn layers and how cellc's parameters map onto them: (class, gate order, kwargs)
NN = {"lstm": (torch.nn.LSTM, ["i", "f", "g", "o"], {}),
      "gru": (torch.nn.GRU, ["r", "z", "n"], {}),
      "elman": (torch.nn.RNN, [""], {"nonlinearity": "tanh"})}


def nn_layer(cell: str, params: Dict[str, Tensor], I: int, H: int):
    """A torch.nn layer holding cellc's parameters (biases folded into bias_ih)."""
    cls, gates, kwargs = NN[cell]
    layer = cls(I, H, **kwargs)
    w_ih, w_hh, b_ih, b_hh = [], [], [], []
    for g in gates:
        if cell == "elman":
            w_ih.append(params["W_x"].T), w_hh.append(params["W_h"].T)
            b_ih.append(params["b"]), b_hh.append(torch.zeros(H))
        elif cell == "gru" and g == "n":
            w_ih.append(params["W_xn"].T), w_hh.append(params["W_hn"].T)
            b_ih.append(params["b_xn"]), b_hh.append(params["b_hn"])
        else:
            w_ih.append(params[f"W_x{g}"].T), w_hh.append(params[f"W_h{g}"].T)
            b_ih.append(params[f"b_{g}"]), b_hh.append(torch.zeros(H))
    with torch.no_grad():
        layer.weight_ih_l0.copy_(torch.cat(w_ih))
        layer.weight_hh_l0.copy_(torch.cat(w_hh))
        layer.bias_ih_l0.copy_(torch.cat(b_ih))
        layer.bias_hh_l0.copy_(torch.cat(b_hh))
    return layer


def nn_grads(cell: str, layer, H: int) -> Dict[str, Tensor]:
    """Gradients of a torch.nn layer, in cellc's names."""
    cls, gates, _ = NN[cell]
    gi, gh = layer.weight_ih_l0.grad, layer.weight_hh_l0.grad
    bi, bh = layer.bias_ih_l0.grad, layer.bias_hh_l0.grad
    out = {}
    for k, g in enumerate(gates):
        blk = slice(k * H, (k + 1) * H)
        if cell == "elman":
            out.update(W_x=gi[blk].T, W_h=gh[blk].T, b=bi[blk])
        elif cell == "gru" and g == "n":
            out.update(W_xn=gi[blk].T, W_hn=gh[blk].T, b_xn=bi[blk], b_hn=bh[blk])
        else:
            out.update({f"W_x{g}": gi[blk].T, f"W_h{g}": gh[blk].T, f"b_{g}": bi[blk]})
    return out
