"""Numerics: saturation, NaN/inf propagation, float32 accuracy over long sequences,
gradient flow, bitwise reproducibility.

Besides the shipped specs, three cells built on functions the shipped ones lack:
softplus, exponential gates with a stabilizer state (sLSTM, Beck et al. 2024), and the
log of a sigmoid (which the front end rewrites to -softplus(-z), see stabilize.py).
"""
import hashlib
import subprocess
import sys

import numpy as np
import pytest
from cellcheck import directional_derivative, generated, problem, rel_err
from conftest import ROOT, SPECS

import cellc
from cellc.reference import interpreter
from cellc.passes import split
from cellc.frontend.spec import read_spec

EXTRA = {
    "softplus_cell": '''name = "softplus_cell"
inputs = ["x"]
states = ["h"]
parameters = ["W", "U", "b", "V"]
equations = """
h' = tanh(softplus(x @ W + h @ U + b)) * sigmoid(h @ V)
"""
''',
    "slstm": '''name = "slstm"
summary = "sLSTM: exponential input and forget gates, stabilizer state m (Beck et al. 2024)"
inputs = ["x"]
states = ["h", "c", "n", "m"]
parameters = ["W_i", "R_i", "b_i", "W_f", "R_f", "b_f", "W_z", "R_z", "b_z", "W_o", "R_o", "b_o"]
equations = """
it = x @ W_i + h @ R_i + b_i
ft = x @ W_f + h @ R_f + b_f
z  = tanh(x @ W_z + h @ R_z + b_z)
o  = sigmoid(x @ W_o + h @ R_o + b_o)
m' = max(ft + m, it)
i  = exp(it - m')
f  = exp(ft + m - m')
c' = f * c + i * z
n' = f * n + i
h' = o * c' / n'
"""
''',
    "logsigmoid_cell": '''name = "logsigmoid_cell"
inputs = ["x"]
states = ["h"]
parameters = ["W", "U", "b", "V"]
equations = """
s = sigmoid(x @ W + h @ U + b)
h' = tanh(log(s) + h) + tanh(log(1 - sigmoid(h @ V)))
"""
''',
}


@pytest.fixture(scope="module")
def extra(tmp_path_factory):
    """name -> (compiled module, split IR) for the cells above."""
    folder = tmp_path_factory.mktemp("specs")
    cells = {}
    for name, text in EXTRA.items():
        path = folder / f"{name}.toml"
        path.write_text(text)
        cells[name] = (cellc.load(path), split(read_spec(path)))
    return cells


def states_for(module, B, H, dtype, rng):
    """Random initial states; a normalizer `n` starts at 1, as sLSTM's does."""
    return {s: (np.ones((B, H)) if s == "n" else rng.normal(scale=0.5, size=(B, H))).astype(dtype)
            for s in module.STATES}


def run(module, params, x, states):
    y, final, cache = module.forward(params, x, states)
    grads = module.backward(cache, np.ones_like(y), {k: np.ones_like(v) for k, v in final.items()})
    return y, final, grads


def everything(y, final, grads):
    return [("outputs", y), *final.items(), *grads.params.items(), *grads.inputs.items(),
            *(("d " + k, v) for k, v in grads.states.items())]


# ---- saturation ---------------------------------------------------------------------
@pytest.mark.parametrize("name", list(EXTRA))
@pytest.mark.parametrize("dtype,scale", [(np.float32, 1e4), (np.float64, 1e30)])
def test_saturated_extra_cells_give_no_nan(extra, name, dtype, scale):
    module, cell = extra[name]
    rng = np.random.default_rng(3)
    params = module.init_params(dtype=dtype, seed=3, I=3, H=4)
    x = (np.sign(rng.normal(size=(6, 5, 3))) * scale).astype(dtype)
    states = states_for(module, 5, 4, dtype, rng)
    y, final, grads = run(module, params, x, states)
    for what, value in everything(y, final, grads):
        assert not np.isnan(value).any(), f"NaN in {what}"
    assert np.isfinite(y).all()
    if dtype == np.float64:      # and the kernels agree with the reference there
        y_ref, final_ref, tape = interpreter.forward(cell, params, {"x": x}, states)
        dp, dx, d0 = interpreter.backward(cell, tape, np.ones_like(y),
                                          {k: np.ones_like(v) for k, v in final.items()})
        assert rel_err(y, y_ref) < 1e-12
        for k in dp:
            assert rel_err(grads.params[k], dp[k]) < 1e-10, k


LIMITS = {  # f(z) as a spec expression; (value, derivative) at -big and +big
    "sigmoid": ("sigmoid(z)", (0, 0), (1, 0)),
    "tanh": ("tanh(z)", (-1, 0), (1, 0)),
    "softplus": ("softplus(z)", (0, 0), ("z", 1)),
    "logsigmoid": ("log(sigmoid(z))", ("z", 1), (0, 0)),
    "log1msigmoid": ("log(1 - sigmoid(z))", (0, 0), ("-z", -1)),
    "exp": ("exp(z - 2 * abs(z))", (0, 0), (0, 0)),     # exp of a large negative number
    "relu": ("relu(z)", (0, 0), ("z", 1)),
}


@pytest.fixture(scope="module")
def limits_cell(tmp_path_factory):
    """One state per function: s_k' = f_k(x_k @ W_k + s_k @ U_k), sizes 1, so that with
    W = 1 and U = 0 the gradient w.r.t. x_k is exactly f_k'(x_k)."""
    names = list(LIMITS)
    eqs = "\n".join(f"z{k} = x{k} @ W{k} + s{k} @ U{k}\ns{k}' = "
                    + LIMITS[n][0].replace("z", f"z{k}") for k, n in enumerate(names))
    text = (f'name = "limits"\ninputs = [{", ".join(f"{chr(34)}x{k}{chr(34)}" for k in range(len(names)))}]\n'
            f'states = [{", ".join(f"{chr(34)}s{k}{chr(34)}" for k in range(len(names)))}]\n'
            f'parameters = [{", ".join(f"{chr(34)}W{k}{chr(34)}, {chr(34)}U{k}{chr(34)}" for k in range(len(names)))}]\n'
            f'output = "s0\'"\nequations = """\n{eqs}\n"""\n')
    path = tmp_path_factory.mktemp("limits") / "limits.toml"
    path.write_text(text)
    return names, cellc.load(path)


@pytest.mark.parametrize("dtype,big", [(np.float32, 1e4), (np.float64, 1e30)])
def test_functions_and_derivatives_reach_their_exact_limits(limits_cell, dtype, big):
    names, module = limits_cell
    z = np.array([-big, big], dtype)
    params = {}
    for k in range(len(names)):
        params[f"W{k}"], params[f"U{k}"] = np.ones((1, 1), dtype), np.zeros((1, 1), dtype)
    inputs = {f"x{k}": z.reshape(1, 2, 1) for k in range(len(names))}
    y, final, cache = module.forward(params, inputs)
    grads = module.backward(cache, None, {k: np.ones_like(v) for k, v in final.items()})
    for k, name in enumerate(names):
        value, slope = final[f"s{k}"][:, 0], grads.inputs[f"x{k}"][0, :, 0]
        for side, (v_lim, d_lim) in enumerate(LIMITS[name][1:]):
            expect = {"z": z[side], "-z": -z[side]}.get(v_lim, v_lim)
            assert value[side] == expect, (name, side, value[side])
            assert slope[side] == d_lim, (name, side, slope[side])


# ---- NaN and inf ----------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_and_inf_propagate_like_the_reference(spec, bad, dtype):
    """A non-finite input reaches exactly the values the float64 interpreter says it
    reaches (never a plausible finite number), and leaves the other sequences alone."""
    module, cell = generated(spec)
    params, inputs, states = problem(module, T=5, B=3, sizes={"I": 3, "H": 4}, dtype=dtype,
                                     seed=4)
    clean = run(module, params, inputs, states)
    dirty_inputs = {k: v.copy() for k, v in inputs.items()}
    next(iter(dirty_inputs.values()))[2, 1, 0] = bad
    y, final, grads = run(module, params, dirty_inputs, states)
    y_ref, final_ref, _ = interpreter.forward(cell, params, dirty_inputs, states)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(y_ref))
    for k in final:
        np.testing.assert_array_equal(np.isfinite(final[k]), np.isfinite(final_ref[k]))
    if bad != bad:     # NaN: the sequence that read it is NaN from that step on
        assert np.isnan(y[2:, 1]).any(axis=-1).all()
    for b in (0, 2):   # the other sequences are untouched
        np.testing.assert_array_equal(y[:, b], clean[0][:, b])
        for k, v in grads.inputs.items():
            np.testing.assert_array_equal(v[:, b], clean[2].inputs[k][:, b])


# ---- accuracy over long sequences ------------------------------------------------------
def float32_errors(module, cell, inputs, params, states, T):
    """Largest relative error of the float32 kernels against the float64 interpreter,
    over outputs, final states and every gradient."""
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    x32 = {k: v.astype(np.float32) for k, v in inputs.items()}
    s32 = {k: v.astype(np.float32) for k, v in states.items()}
    rng = np.random.default_rng(T)
    y, final, cache = module.forward(p32, x32, s32)
    dy = rng.normal(size=y.shape).astype(np.float32)
    grads = module.backward(cache, dy)
    # the reference sees exactly the float32 numbers the kernels saw
    y_ref, final_ref, tape = interpreter.forward(cell, p32, x32, s32)
    dp, dx, d0 = interpreter.backward(cell, tape, dy.astype(np.float64))
    errors = {"outputs": rel_err(y, y_ref)}
    errors.update({f"final {k}": rel_err(final[k], final_ref[k]) for k in final})
    errors.update({f"d {k}": rel_err(grads.params[k], dp[k]) for k in dp})
    errors.update({f"d {k}": rel_err(grads.inputs[k], dx[k]) for k in dx})
    errors.update({f"d {k}0": rel_err(grads.states[k], d0[k]) for k in d0})
    return errors


# Documented in the README ("Numerics"). Measured worst at T=10,000: 8.1e-6 (indrnn) over
# every cell but naive_linear and ln_lstm. naive_linear's state is a running sum of T float32 terms, so its own
# rounding grows like T * 2**-24 (2.9e-4 measured): the cell's arithmetic, not the kernels'.
FLOAT32_BOUND = {"naive_linear": 1e-3, "ln_lstm": 1e-4, "phased_lstm": 1e-4,
                 "antisymmetric": 1e-3}
# antisymmetric is h' = h + 0.01 * tanh(...): as in naive_linear, the state and its adjoint
# are running sums of T float32 terms (the Jacobian is I plus 0.01 of something), so
# their rounding grows with T (measured at T = 10,000: 4.5e-5 in dV, 2.8e-5 in db).
# phased_lstm's gate reads the phase (t - shift) % tau with slope 2 / (r_on * tau) (40 /
# tau): the float32 rounding of a time stamp t of size 100 (6e-6) comes out of k up to
# 40 times larger, which no arithmetic in the kernels can undo (measured 4.1e-5 with the
# adversarial inputs, whose t reach 100; under 1e-5 with the random ones).
# ln_lstm's float32 trajectory leaves float64's within a thousand steps, torch's too: it
# amplifies rounding (measured, B=2, I=4, H=6: torch float32 against float64 3e-5 at
# T=100 and 3.8e-2 at T=1,000; cellc 3e-5 and 0.26). Compared where it still tracks.
FLOAT32_HORIZON = {"ln_lstm": 100}


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
@pytest.mark.parametrize("kind", ["random", "adversarial"])
def test_float32_accuracy_over_ten_thousand_steps(spec, kind):
    if kind == "adversarial" and spec.stem in FLOAT32_HORIZON:
        pytest.skip("saturating inputs: torch's own float32 ln_lstm is 6 % off float64 in "
                    "outputs and 19 % in gradients at T=100 (measured); no reference to meet")
    module, cell = generated(spec)
    T, B, I, H = FLOAT32_HORIZON.get(spec.stem, 10_000), 2, 4, 6
    params, inputs, states = problem(module, T=T, B=B, sizes={"I": I, "H": H},
                                     dtype=np.float64, seed=9)
    if kind == "adversarial":
        # inputs that drive gates into saturation, through the fast tanh's clamp at
        # |z| = 9 and back near zero, in blocks of steps
        rng = np.random.default_rng(10)
        scale = rng.choice([0.01, 1.0, 9.0, 30.0], size=(T, 1, 1))
        inputs = {k: v * scale for k, v in inputs.items()}
    errors = float32_errors(module, cell, inputs, params, states, T)
    worst = max(errors, key=errors.get)
    assert errors[worst] < FLOAT32_BOUND.get(spec.stem, 1e-5), f"{worst}: {errors[worst]:.3g}"


# ---- gradient flow ------------------------------------------------------------------
@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_gradient_check_over_a_thousand_steps(spec):
    module, _ = generated(spec)
    params, inputs, states = problem(module, T=1000, B=2, sizes={"I": 3, "H": 4},
                                     dtype=np.float64, seed=12)
    rng = np.random.default_rng(13)
    y, final, cache = module.forward(params, inputs, states)
    dy = rng.normal(size=y.shape)
    ds = {k: rng.normal(size=v.shape) for k, v in final.items()}
    grads = module.backward(cache, dy, ds)
    for what, value in everything(y, final, grads):
        assert np.isfinite(value).all(), what
    # step 1e-8: over 1,000 steps a relu unit within 1e-6 of its kink (indrnn: 1 % off at
    # 1e-6) or the curvature of a layer-normalized cell (ln_lstm: 5e-5 off at 1e-6, 5e-7
    # at 1e-7) spoil larger steps; both agree to 6e-9 at 1e-8 (measured)
    numeric, analytic = directional_derivative(module, params, inputs, states, dy, ds, rng, 1e-8)
    assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), (numeric, analytic)


# ---- reproducibility ---------------------------------------------------------------
def digest(module, params, inputs, states, lengths=None):
    y, final, cache = module.forward(params, inputs, states, lengths)
    grads = module.backward(cache, np.ones_like(y))
    h = hashlib.sha256()
    for _, value in everything(y, final, grads):
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_bitwise_identical_on_repeated_runs(spec):
    module, _ = generated(spec)
    params, inputs, states = problem(module, T=40, B=24, sizes={"I": 32, "H": 48},
                                     dtype=np.float32, seed=6)
    lengths = np.random.default_rng(6).integers(0, 41, size=24)
    first = [digest(module, params, inputs, states), digest(module, params, inputs, states, lengths)]
    for _ in range(3):
        assert [digest(module, params, inputs, states),
                digest(module, params, inputs, states, lengths)] == first


PROCESS = """
import sys, numpy as np
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
from test_numerics import digest
from cellcheck import problem
import generated.lstm as m
params, inputs, states = problem(m, T=40, B=24, sizes={"I": 32, "H": 48}, dtype=np.float32, seed=6)
print(digest(m, params, inputs, states))
"""


def test_bitwise_identical_across_processes():
    runs = [subprocess.run([sys.executable, "-c", PROCESS, str(ROOT)], capture_output=True,
                           text=True, timeout=300) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:]
    module, _ = generated(ROOT / "specs" / "lstm.toml")
    params, inputs, states = problem(module, T=40, B=24, sizes={"I": 32, "H": 48},
                                     dtype=np.float32, seed=6)
    here = digest(module, params, inputs, states)
    assert runs[0].stdout.strip() == runs[1].stdout.strip() == here
