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



def nn_layer(module, params: Dict[str, Tensor], I: int, H: int):
    """The torch.nn layer the cell's spec maps ([torch] table), holding cellc's parameters."""
    from cellc.torch import weights_to_torch
    layer = getattr(torch.nn, module.TORCH["module"])(I, H, **module.TORCH["options"])
    weights_to_torch(module, {k + "_l0": v.numpy() for k, v in params.items()}, layer)
    return layer


def nn_grads(module, layer) -> Dict[str, Tensor]:
    """Gradients of a torch.nn layer, in cellc's names."""
    from cellc.torch import grads_from_torch
    return {k[:-len("_l0")]: torch.from_numpy(v)
            for k, v in grads_from_torch(module, layer).items()}
