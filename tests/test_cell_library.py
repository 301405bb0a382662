"""The cell library against independent implementations: each cell's paper equations
written again here as a PyTorch autograd loop (torch.nn itself where it has the cell:
see test_torch.py for elman_relu and lstmp), never read from the spec. Outputs, final
states and every gradient must agree in float64."""
import numpy as np
import pytest
from cellcheck import all_sizes, generated, rel_err
from conftest import ROOT

torch = pytest.importorskip("torch")
F = pytest.importorskip("torch.nn.functional")
T, B, I, H = 6, 3, 4, 5
sig, tanh = torch.sigmoid, torch.tanh


def gru_seed(p, x, h):        # seed 003: reset before the matmul, z keeps the old state
    z = sig(x @ p["W_xz"] + h @ p["W_hz"] + p["b_z"])
    r = sig(x @ p["W_xr"] + h @ p["W_hr"] + p["b_r"])
    u = tanh(x @ p["W_xh"] + (r * h) @ p["W_hh"] + p["b_h"])
    return z * h + (1 - z) * u


def cifg_lstm(p, x, h, c):    # Greff et al. 2017, CIFG: f = 1 - i
    i = sig(x @ p["W_xi"] + h @ p["W_hi"] + p["b_i"])
    g = tanh(x @ p["W_xg"] + h @ p["W_hg"] + p["b_g"])
    o = sig(x @ p["W_xo"] + h @ p["W_ho"] + p["b_o"])
    c = (1 - i) * c + i * g
    return o * tanh(c), c


def mgu(p, x, h):             # Zhou et al. 2016, eq. 5
    f = sig(x @ p["W_xf"] + h @ p["W_hf"] + p["b_f"])
    u = tanh(x @ p["W_xh"] + (f * h) @ p["W_hh"] + p["b_h"])
    return (1 - f) * h + f * u


def indrnn(p, x, h):          # Li et al. 2018, eq. 2: the recurrent weight is a vector
    return torch.relu(x @ p["W"] + p["u"] * h + p["b"])


def mingru(p, x, h):          # Feng et al. 2024, Algorithm 1 (sequential mode)
    z = sig(x @ p["W_z"] + p["b_z"])
    return (1 - z) * h + z * (x @ p["W_h"] + p["b_h"])


def ln_lstm(p, x, h, c):      # Ba et al. 2016 eqs. 20-22: torch's layer_norm over all 4H units
    gates = "ifgo"
    wx = torch.cat([p[f"W_x{k}"] for k in gates], 1)
    wh = torch.cat([p[f"W_h{k}"] for k in gates], 1)
    gx = torch.cat([p[f"gx_{k}"] for k in gates])
    gh = torch.cat([p[f"gh_{k}"] for k in gates])
    b = torch.cat([p[f"b_{k}"] for k in gates])
    a = F.layer_norm(x @ wx, (4 * H,), gx, None, 1e-5) + F.layer_norm(h @ wh, (4 * H,), gh, None, 1e-5) + b
    i, f, g, o = a.split(H, dim=-1)
    c = sig(f) * c + sig(i) * tanh(g)
    return sig(o) * tanh(F.layer_norm(c, (H,), p["g_c"], p["beta_c"], 1e-5)), c


REFERENCES = {"gru_seed": gru_seed, "cifg_lstm": cifg_lstm, "mgu": mgu, "indrnn": indrnn,
              "mingru": mingru, "ln_lstm": ln_lstm}


def reference_errors(name, seed=0):
    """Largest relative error of each result, compiled module vs the torch loop."""
    module, _ = generated(ROOT / "specs" / f"{name}.toml")
    sizes = all_sizes(module, {"I": I, "H": H})
    rng = np.random.default_rng(seed)
    params = module.init_params(dtype=np.float64, seed=seed, **sizes)
    params = {k: v + rng.normal(scale=0.3, size=v.shape) for k, v in params.items()}  # not 1s/0s
    x = rng.normal(size=(T, B, I))
    states = {k: rng.normal(scale=0.5, size=(B, sizes[d])) for k, d in module.STATES.items()}
    dy = rng.normal(size=(T, B, sizes[module.OUTPUT_DIM]))
    ds = {k: rng.normal(size=v.shape) for k, v in states.items()}

    y, final, cache = module.forward(params, x, states)
    grads = module.backward(cache, dy, ds)

    pt = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    xt = torch.tensor(x, requires_grad=True)
    st = {k: torch.tensor(v, requires_grad=True) for k, v in states.items()}
    current, ys = list(st.values()), []
    for t in range(T):
        out = REFERENCES[name](pt, xt[t], *current)
        current = list(out) if isinstance(out, tuple) else [out]
        ys.append(current[0])
    yt = torch.stack(ys)
    loss = (yt * torch.tensor(dy)).sum() + sum(
        (f * torch.tensor(ds[k])).sum() for k, f in zip(states, current))
    loss.backward()

    errors = {"outputs": rel_err(y, yt.detach().numpy()), "d x": rel_err(grads.inputs["x"], xt.grad)}
    for k, f in zip(states, current):
        errors[f"final {k}"] = rel_err(final[k], f.detach().numpy())
        errors[f"d {k}0"] = rel_err(grads.states[k], st[k].grad)
    errors.update({f"d {k}": rel_err(grads.params[k], pt[k].grad) for k in params})
    return errors


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_matches_independent_torch_loop(name):
    errors = reference_errors(name)
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-10, f"{worst}: {errors[worst]:.3g}"


# ---- published cells that need the language of issue 15 ----------------------------------
# Each `fn(p, xs, s) -> (output, new states)`: xs the inputs at one step, s the states,
# by name; written from the paper, with torch's own functions.
def fastgrnn(p, xs, s):       # Kusupati et al. 2018, eqs. 3-4; zeta, nu through a sigmoid
    a = xs["x"] @ p["W"] + s["h"] @ p["U"]
    z, u = sig(a + p["b_z"]), tanh(a + p["b_h"])
    h = (sig(p["zeta"]) * (1 - z) + sig(p["nu"])) * u + z * s["h"]
    return h, {"h": h}


def scrn(p, xs, s, alpha=0.95):   # Mikolov et al. 2015, eqs. 4-6 (before the softmax)
    ctx = (1 - alpha) * (xs["x"] @ p["B"]) + alpha * s["s"]
    h = sig(ctx @ p["P"] + xs["x"] @ p["A"] + s["h"] @ p["R"])
    return h @ p["U"] + ctx @ p["V"], {"h": h, "s": ctx}


def phased_lstm(p, xs, s, r_on=0.05, leak=1e-3):   # Neil et al. 2016, eqs. 6-11
    x, h, c = xs["x"], s["h"], s["c"]
    phi = torch.remainder(xs["t"] - p["shift"], p["tau"]) / p["tau"]
    k = torch.where(phi < r_on / 2, 2 * phi / r_on,
                    torch.where(phi < r_on, 2 - 2 * phi / r_on, leak * phi))
    i = sig(x @ p["W_xi"] + h @ p["W_hi"] + p["b_i"])
    f = sig(x @ p["W_xf"] + h @ p["W_hf"] + p["b_f"])
    o = sig(x @ p["W_xo"] + h @ p["W_ho"] + p["b_o"])
    c_tilde = f * c + i * tanh(x @ p["W_xc"] + h @ p["W_hc"] + p["b_c"])
    h_new = k * (o * tanh(c_tilde)) + (1 - k) * h
    return h_new, {"h": h_new, "c": k * c_tilde + (1 - k) * c}


def cfc(p, xs, s):            # Hasani et al. 2022, eq. 10, as ncps' CfCCell (mode "default")
    z = torch.cat([xs["x"], s["h"]], -1) @ torch.cat([p["W_bx"], p["W_bh"]]) + p["b_bb"]
    bb = 1.7159 * tanh(0.666 * z)                   # LeCun's tanh
    f1, f2 = tanh(bb @ p["W_1"] + p["b_1"]), tanh(bb @ p["W_2"] + p["b_2"])
    gate = sig(-(bb @ p["W_a"] + p["b_a"]) * xs["ts"] + bb @ p["W_b"] + p["b_b"])
    h = f1 * (1 - gate) + gate * f2
    return h, {"h": h}


def mingru_g(p, xs, s):       # Feng et al. 2024, Section 3.1: g keeps h~ positive
    z = sig(xs["x"] @ p["W_z"] + p["b_z"])
    a = xs["x"] @ p["W_h"] + p["b_h"]
    h = (1 - z) * s["h"] + z * torch.where(a >= 0, a + 0.5, sig(a))
    return h, {"h": h}


def antisymmetric(p, xs, s, eps=0.01, gamma=0.01):   # Chang et al. 2019, eq. 12, columns
    A = p["W"] - p["W"].T - gamma * torch.eye(H, dtype=p["W"].dtype)
    h = s["h"] + eps * tanh((A @ s["h"].T).T + xs["x"] @ p["V"] + p["b"])
    return h, {"h": h}


PUBLISHED = {"antisymmetric": antisymmetric, "fastgrnn": fastgrnn, "scrn": scrn, "phased_lstm": phased_lstm, "cfc": cfc,
             "mingru_g": mingru_g}


def published_errors(name, seed=0):
    """Largest relative error of each result, compiled module vs the paper's loop; time
    stamps (`t`) increase irregularly, elapsed times (`ts`) are positive."""
    module, _ = generated(ROOT / "specs" / f"{name}.toml")
    sizes = all_sizes(module, {"I": I, "H": H})
    widths = {**sizes, "1": 1}
    rng = np.random.default_rng(seed)
    params = module.init_params(dtype=np.float64, seed=seed, **sizes)
    params = {k: v + rng.normal(scale=0.3, size=v.shape) * (k not in ("tau", "shift"))
              for k, v in params.items()}
    xs = {k: rng.normal(size=(T, B, widths[d])) for k, d in module.INPUTS.items()}
    if "t" in xs:
        xs["t"] = np.cumsum(rng.uniform(0.1, 3.0, size=(T, B, 1)), axis=0)
    if "ts" in xs:
        xs["ts"] = rng.uniform(0.1, 2.0, size=(T, B, 1))
    states = {k: rng.normal(scale=0.5, size=(B, widths[d])) for k, d in module.STATES.items()}
    dy = rng.normal(size=(T, B, widths[module.OUTPUT_DIM]))
    ds = {k: rng.normal(size=v.shape) for k, v in states.items()}

    y, final, cache = module.forward(params, xs, states)
    grads = module.backward(cache, dy, ds)

    pt = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    xt = {k: torch.tensor(v, requires_grad=True) for k, v in xs.items()}
    current = {k: torch.tensor(v, requires_grad=True) for k, v in states.items()}
    initial, ys = dict(current), []
    for t in range(T):
        out, current = PUBLISHED[name](pt, {k: v[t] for k, v in xt.items()}, current)
        ys.append(out)
    yt = torch.stack(ys)
    loss = (yt * torch.tensor(dy)).sum() + sum((current[k] * torch.tensor(ds[k])).sum()
                                                for k in states)
    loss.backward()
    errors = {"outputs": rel_err(y, yt.detach().numpy())}
    errors.update({f"d {k}": rel_err(grads.inputs[k], xt[k].grad) for k in xs})
    errors.update({f"final {k}": rel_err(final[k], current[k].detach().numpy()) for k in states})
    errors.update({f"d {k}0": rel_err(grads.states[k], initial[k].grad) for k in states})
    errors.update({f"d {k}": rel_err(grads.params[k], pt[k].grad) for k in params})
    return errors


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_cell_matches_its_paper_in_torch(name):
    errors = published_errors(name)
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-10, f"{worst}: {errors[worst]:.3g}"
