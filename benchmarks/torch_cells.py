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


def elman_relu(x: Tensor, s: List[Tensor], p: Dict[str, Tensor]) -> Tuple[Tensor, List[Tensor]]:
    h = s[0]
    ys = []
    for t in range(x.shape[0]):
        h = torch.relu(x[t] @ p["W_x"] + h @ p["W_h"] + p["b"])
        ys.append(h)
    return torch.stack(ys), [h]


def gru_seed(x: Tensor, s: List[Tensor], p: Dict[str, Tensor]) -> Tuple[Tensor, List[Tensor]]:
    h = s[0]
    ys = []
    for t in range(x.shape[0]):
        xt = x[t]
        z = torch.sigmoid(xt @ p["W_xz"] + h @ p["W_hz"] + p["b_z"])
        r = torch.sigmoid(xt @ p["W_xr"] + h @ p["W_hr"] + p["b_r"])
        u = torch.tanh(xt @ p["W_xh"] + (r * h) @ p["W_hh"] + p["b_h"])
        h = z * h + (1 - z) * u
        ys.append(h)
    return torch.stack(ys), [h]


def cifg_lstm(x: Tensor, s: List[Tensor], p: Dict[str, Tensor]) -> Tuple[Tensor, List[Tensor]]:
    h, c = s[0], s[1]
    ys = []
    for t in range(x.shape[0]):
        xt = x[t]
        i = torch.sigmoid(xt @ p["W_xi"] + h @ p["W_hi"] + p["b_i"])
        g = torch.tanh(xt @ p["W_xg"] + h @ p["W_hg"] + p["b_g"])
        o = torch.sigmoid(xt @ p["W_xo"] + h @ p["W_ho"] + p["b_o"])
        c = (1 - i) * c + i * g
        h = o * torch.tanh(c)
        ys.append(h)
    return torch.stack(ys), [h, c]


def mgu(x: Tensor, s: List[Tensor], p: Dict[str, Tensor]) -> Tuple[Tensor, List[Tensor]]:
    h = s[0]
    ys = []
    for t in range(x.shape[0]):
        xt = x[t]
        f = torch.sigmoid(xt @ p["W_xf"] + h @ p["W_hf"] + p["b_f"])
        u = torch.tanh(xt @ p["W_xh"] + (f * h) @ p["W_hh"] + p["b_h"])
        h = (1 - f) * h + f * u
        ys.append(h)
    return torch.stack(ys), [h]


def indrnn(x: Tensor, s: List[Tensor], p: Dict[str, Tensor]) -> Tuple[Tensor, List[Tensor]]:
    h = s[0]
    ys = []
    for t in range(x.shape[0]):
        h = torch.relu(x[t] @ p["W"] + p["u"] * h + p["b"])
        ys.append(h)
    return torch.stack(ys), [h]


def mingru(x: Tensor, s: List[Tensor], p: Dict[str, Tensor]) -> Tuple[Tensor, List[Tensor]]:
    h = s[0]
    ys = []
    for t in range(x.shape[0]):
        z = torch.sigmoid(x[t] @ p["W_z"] + p["b_z"])
        h = (1 - z) * h + z * (x[t] @ p["W_h"] + p["b_h"])
        ys.append(h)
    return torch.stack(ys), [h]


def lstmp(x: Tensor, s: List[Tensor], p: Dict[str, Tensor]) -> Tuple[Tensor, List[Tensor]]:
    h, c = s[0], s[1]
    ys = []
    for t in range(x.shape[0]):
        xt = x[t]
        i = torch.sigmoid(xt @ p["W_xi"] + h @ p["W_hi"] + p["b_i"])
        f = torch.sigmoid(xt @ p["W_xf"] + h @ p["W_hf"] + p["b_f"])
        g = torch.tanh(xt @ p["W_xg"] + h @ p["W_hg"] + p["b_g"])
        o = torch.sigmoid(xt @ p["W_xo"] + h @ p["W_ho"] + p["b_o"])
        c = f * c + i * g
        h = (o * torch.tanh(c)) @ p["W_hr"]
        ys.append(h)
    return torch.stack(ys), [h, c]


def _ln(v: Tensor, gain: Tensor) -> Tensor:
    return torch.nn.functional.layer_norm(v, [v.shape[-1]], gain, None, 1e-5)


def ln_lstm(x: Tensor, s: List[Tensor], p: Dict[str, Tensor]) -> Tuple[Tensor, List[Tensor]]:
    h, c = s[0], s[1]
    H = c.shape[-1]
    wx = torch.cat([p["W_xi"], p["W_xf"], p["W_xg"], p["W_xo"]], 1)
    wh = torch.cat([p["W_hi"], p["W_hf"], p["W_hg"], p["W_ho"]], 1)
    gx = torch.cat([p["gx_i"], p["gx_f"], p["gx_g"], p["gx_o"]])
    gh = torch.cat([p["gh_i"], p["gh_f"], p["gh_g"], p["gh_o"]])
    b = torch.cat([p["b_i"], p["b_f"], p["b_g"], p["b_o"]])
    ax = _ln(x @ wx, gx)                         # the input projections, all steps at once
    ys = []
    for t in range(x.shape[0]):
        a = ax[t] + _ln(h @ wh, gh) + b
        i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        cn = torch.nn.functional.layer_norm(c, [H], p["g_c"], p["beta_c"], 1e-5)
        h = torch.sigmoid(o) * torch.tanh(cn)
        ys.append(h)
    return torch.stack(ys), [h, c]


CELLS = {"lstm": lstm, "peephole_lstm": peephole_lstm, "gru": gru, "gru_cho": gru_cho,
         "elman": elman, "elman_relu": elman_relu, "gru_seed": gru_seed,
         "cifg_lstm": cifg_lstm, "mgu": mgu, "indrnn": indrnn, "mingru": mingru,
         "lstmp": lstmp, "ln_lstm": ln_lstm}



def nn_layer(module, params: Dict[str, Tensor], I: int, H: int):
    """The torch.nn layer the cell's spec maps ([torch] table), holding cellc's parameters."""
    from cellc.torch import weights_to_torch
    extra = {}
    if any(t[0] == "weight_hr" for terms in module.TORCH["params"].values() for t in terms):
        extra["proj_size"] = params["W_hr"].shape[1]          # an LSTMP
    layer = getattr(torch.nn, module.TORCH["module"])(I, H, **module.TORCH["options"], **extra)
    weights_to_torch(module, {k + "_l0": v.numpy() for k, v in params.items()}, layer)
    return layer


def nn_grads(module, layer) -> Dict[str, Tensor]:
    """Gradients of a torch.nn layer, in cellc's names."""
    from cellc.torch import grads_from_torch
    return {k[:-len("_l0")]: torch.from_numpy(v)
            for k, v in grads_from_torch(module, layer).items()}
