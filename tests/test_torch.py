"""The generated modules of the cells torch.nn has (LSTM, LSTMP, GRU in PyTorch's
convention, Elman with tanh and ReLU) against torch.nn, with the weights mapped by
each spec's [torch] table."""
import numpy as np
import pytest
from cellcheck import generated, rel_err
from conftest import ROOT

torch = pytest.importorskip("torch")
ct = pytest.importorskip("cellc.torch")
T, B, I, H, P = 7, 3, 4, 5, 3


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


CASES = {   # torch.nn layer, the spec's states and their sizes
    "lstm": (lambda: torch.nn.LSTM(I, H), {"h": H, "c": H}),
    "lstmp": (lambda: torch.nn.LSTM(I, H, proj_size=P), {"h": P, "c": H}),
    "gru": (lambda: torch.nn.GRU(I, H), {"h": H}),
    "elman": (lambda: torch.nn.RNN(I, H, nonlinearity="tanh"), {"h": H}),
    "elman_relu": (lambda: torch.nn.RNN(I, H, nonlinearity="relu"), {"h": H}),
}


def single_layer(values):
    return {k[:-len("_l0")]: np.ascontiguousarray(v, np.float64) for k, v in values.items()}


@pytest.mark.parametrize("name", CASES)
def test_matches_torch_nn(name):
    make, widths = CASES[name]
    state_names = list(widths)
    torch.manual_seed(0)
    layer = make().double()
    module, _ = generated(ROOT / "specs" / f"{name}.toml")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(T, B, I))
    states = [rng.normal(size=(B, widths[s])) for s in state_names]
    dy = rng.normal(size=(T, B, widths["h"]))
    dfinal = [rng.normal(size=(B, widths[s])) for s in state_names]

    xt, hs, yt, final_t = run_torch(layer, x, states)
    backward_torch(yt, final_t, dy, dfinal)

    params = single_layer(ct.weights_from_torch(module, layer))
    y, final, cache = module.forward(params, x, dict(zip(state_names, states)))
    grads = module.backward(cache, dy, dict(zip(state_names, dfinal)))

    errors = {"outputs": rel_err(y, yt.detach().numpy()), "dx": rel_err(grads.inputs["x"], xt.grad)}
    for s, ft, ht in zip(state_names, final_t, hs):
        errors[f"final {s}"] = rel_err(final[s], ft.detach().numpy()[0])
        errors[f"d{s}0"] = rel_err(grads.states[s], ht.grad.numpy()[0])
    for k, v in single_layer(ct.grads_from_torch(module, layer)).items():
        errors[f"d{k}"] = rel_err(grads.params[k], v)
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-10, f"{worst}: {errors[worst]:.3g}"
