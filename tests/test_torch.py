"""LSTM, GRU (PyTorch convention) and Elman against torch.nn with copied weights."""
import numpy as np
import pytest
from cellcheck import generated, rel_err
from conftest import ROOT

torch = pytest.importorskip("torch")
T, B, I, H = 7, 3, 4, 5


def run_torch(layer, x, states):
    x = torch.tensor(x, requires_grad=True)
    hs = [torch.tensor(s[None], requires_grad=True) for s in states]
    y, final = layer(x, tuple(hs) if len(hs) > 1 else hs[0])
    final = final if isinstance(final, tuple) else (final,)
    return x, hs, y, final


def backward_torch(y, final, dy, dfinal):
    loss = (y * torch.tensor(dy)).sum() + sum(
        (f * torch.tensor(d[None])).sum() for f, d in zip(final, dfinal))
    loss.backward()


def blocks(w, n):
    return [w[k * H:(k + 1) * H] for k in range(n)]


CASES = {
    "lstm": (lambda: torch.nn.LSTM(I, H), ["i", "f", "g", "o"], ("h", "c")),
    "gru": (lambda: torch.nn.GRU(I, H), ["r", "z", "n"], ("h",)),
    "elman": (lambda: torch.nn.RNN(I, H, nonlinearity="tanh"), [""], ("h",)),
}


def to_cellc(name, layer, gates):
    p = {k: v.detach().numpy().astype(np.float64) for k, v in layer.named_parameters()}
    w_ih, w_hh = blocks(p["weight_ih_l0"], len(gates)), blocks(p["weight_hh_l0"], len(gates))
    b_ih, b_hh = blocks(p["bias_ih_l0"], len(gates)), blocks(p["bias_hh_l0"], len(gates))
    out = {}
    for k, g in enumerate(gates):
        if name == "elman":
            out.update(W_x=w_ih[0].T, W_h=w_hh[0].T, b=b_ih[0] + b_hh[0])
        elif name == "gru" and g == "n":
            out.update(W_xn=w_ih[k].T, W_hn=w_hh[k].T, b_xn=b_ih[k], b_hn=b_hh[k])
        else:
            out.update({f"W_x{g}": w_ih[k].T, f"W_h{g}": w_hh[k].T, f"b_{g}": b_ih[k] + b_hh[k]})
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


@pytest.mark.parametrize("name", CASES)
def test_matches_torch_nn(name):
    make, gates, state_names = CASES[name]
    torch.manual_seed(0)
    layer = make().double()
    module, _ = generated(ROOT / "specs" / f"{name}.toml")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(T, B, I))
    states = [rng.normal(size=(B, H)) for _ in state_names]
    dy = rng.normal(size=(T, B, H))
    dfinal = [rng.normal(size=(B, H)) for _ in state_names]

    xt, hs, yt, final_t = run_torch(layer, x, states)
    backward_torch(yt, final_t, dy, dfinal)

    params = to_cellc(name, layer, gates)
    y, final, cache = module.forward(params, x, dict(zip(state_names, states)))
    grads = module.backward(cache, dy, dict(zip(state_names, dfinal)))

    errors = {"outputs": rel_err(y, yt.detach().numpy()), "dx": rel_err(grads.inputs["x"], xt.grad)}
    for s, ft, ht in zip(state_names, final_t, hs):
        errors[f"final {s}"] = rel_err(final[s], ft.detach().numpy()[0])
        errors[f"d{s}0"] = rel_err(grads.states[s], ht.grad.numpy()[0])
    tgrad = {k: v.grad.numpy() for k, v in layer.named_parameters()}
    mapped = to_cellc(name, type("G", (), {"named_parameters": lambda self: [
        (k, torch.tensor(v)) for k, v in tgrad.items()]})(), gates)
    for k, v in mapped.items():
        if k.startswith("b") and not (name == "gru" and k in ("b_xn", "b_hn")):
            v = v / 2      # b = b_ih + b_hh: each torch bias gets the same gradient
        errors[f"d{k}"] = rel_err(grads.params[k], v)
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-10, f"{worst}: {errors[worst]:.3g}"
