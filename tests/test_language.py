"""Constructs of the language that say what papers write (issue 15), each checked the
same way: the front end gives the IR one would write by hand, and the module compiled
from its bytes matches the interpreter in float64 and float32."""
import numpy as np
import pytest
from cellcheck import build, compare, directional_derivative, problem

from cellc.driver import compile_bytes

HEADER = ('name = "c"\ninputs = ["x"]\nstates = ["h"]\nparameters = ["W", "U", "b"]\n'
          'equations = """\n')


def spec(equations: str) -> str:
    return HEADER + equations + '\n"""\n'


NAMED = "dt = 0.076\nk = 2 * dt\nh' = h + k * tanh(x @ W + h @ U + b)"
INLINED = "h' = h + 0.152 * tanh(x @ W + h @ U + b)"


def test_named_constants_fold_to_the_cell_written_with_numbers():
    named = compile_bytes(spec(NAMED).encode()).cell
    inlined = compile_bytes(spec(INLINED).encode()).cell
    assert [(n.name, n.expr) for n in named.nodes] == [(n.name, n.expr) for n in inlined.nodes]
    assert "k * tanh" in [n.text for n in named.nodes][0]      # comments read like the paper


@pytest.mark.parametrize("dtype, bound", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_named_constants_in_kernels_match_the_interpreter(dtype, bound):
    module, cell = build(spec(NAMED))
    errors = compare(module, cell, T=5, B=3, sizes={"I": 2, "H": 4}, dtype=dtype, seed=1)
    assert max(errors.values()) < bound, errors


# ---- gap 5: comparisons, the conditional, piecewise and periodic functions ----------
PIECEWISE = """a = x @ W + h @ U + b
g = a + 0.5 if a >= 0 else sigmoid(a)
k = where(a < 0.3 and a > -0.3, silu(a), logsigmoid(a)) + sin(a) * cos(h)
m = floor(a * 3) + a % 0.7 + a // 0.4 + mod(h, 1.3)
h' = 0.5 * h + 0.1 * g + 0.1 * tanh(k) + 0.01 * m + 0.1 * where(not a == 0, a, h) + 0.1 * (a != h)"""


@pytest.mark.parametrize("dtype, bound", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_piecewise_and_periodic_functions_match_the_interpreter(dtype, bound):
    module, cell = build(spec(PIECEWISE))
    errors = compare(module, cell, T=5, B=3, sizes={"I": 2, "H": 4}, dtype=dtype, seed=1)
    assert max(errors.values()) < bound, errors


def test_piecewise_gradients_are_directional_derivatives():
    """Away from the jumps (floor, mod, the comparisons), the derivative is the exact one;
    the random problem stays away from them at this step size."""
    module, _ = build(spec(PIECEWISE))
    params, inputs, states = problem(module, T=4, B=3, sizes={"I": 2, "H": 4},
                                     dtype=np.float64, seed=3)
    rng = np.random.default_rng(4)
    y, final, _ = module.forward(params, inputs["x"], states)
    dy = rng.normal(size=y.shape)
    ds = {k: rng.normal(size=v.shape) for k, v in final.items()}
    numeric, analytic = directional_derivative(module, params, inputs, states, dy, ds, rng, 1e-7)
    assert abs(numeric - analytic) <= 1e-5 * max(1.0, abs(analytic)), (numeric, analytic)


def test_conditional_is_read_as_where_with_the_boundary_in_the_true_branch():
    ifexp = compile_bytes(spec("h' = h + 0.5 if h >= 0 else sigmoid(h) + x @ W + h @ U + b").encode())
    written = compile_bytes(spec("h' = where(h >= 0, h + 0.5, sigmoid(h) + x @ W + h @ U + b)").encode())
    assert [n.expr for n in ifexp.cell.nodes] == [n.expr for n in written.cell.nodes]
    module, cell = build(spec("h' = where(x @ W >= 0, x @ W + h @ U, sigmoid(h @ U + b))"))
    zero = {"W": np.zeros((1, 1)), "U": np.full((1, 1), 2.0), "b": np.zeros(1)}
    x, h0 = np.zeros((1, 1, 1)), {"h": np.full((1, 1), 3.0)}
    y, _, cache = module.forward(zero, x, h0)
    assert y[0, 0, 0] == 6.0                       # x @ W = 0 selects the first branch
    grads = module.backward(cache, np.ones_like(y))
    assert grads.states["h"][0, 0] == 2.0          # ... and its derivative, d(h @ U)/dh


@pytest.mark.parametrize("fn, x, value, slope", [
    ("logsigmoid", -1e4, -1e4, 1.0), ("logsigmoid", 1e4, 0.0, 0.0),
    ("silu", -1e4, 0.0, 0.0), ("silu", 1e4, 1e4, 1.0),
    ("sin", 1e4, np.sin(1e4), np.cos(1e4)), ("cos", 0.0, 1.0, 0.0)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_new_functions_saturate_to_their_limits(fn, x, value, slope, dtype):
    """Far out, values and derivatives are the limits, finite, in both dtypes."""
    module, _ = build(spec(f"h' = {fn}(x @ W + h @ U + b)"))
    params = {"W": np.ones((1, 1), dtype), "U": np.zeros((1, 1), dtype), "b": np.zeros(1, dtype)}
    y, _, cache = module.forward(params, np.full((1, 1, 1), x, dtype))
    grads = module.backward(cache, np.ones_like(y))
    tol = 1e-3 if dtype == np.float32 else 1e-9
    assert np.isfinite(y).all() and np.isfinite(grads.inputs["x"]).all()
    assert abs(y[0, 0, 0] - value) <= tol * max(1, abs(value))
    assert abs(grads.inputs["x"][0, 0, 0] - slope) <= tol


# ---- gap 6: every name free -----------------------------------------------------------
FREE = """name = "freecell"
inputs = {t = "I", np = "I"}
states = {h = "T", range = "N"}
parameters = ["B", "W", "U", "real", "empty", "params", "dtype", "len", "V"]
equations = \"\"\"
a = t @ W + h @ U + real * h + np @ W
dt = 0.5
range' = tanh(h @ V + empty * range + params)
h' = dtype * tanh(a) + dt * h + len + range' @ B
\"\"\"
[shapes]
V = ["T", "N"]
B = ["N", "T"]
"""


@pytest.mark.parametrize("dtype, bound", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_names_the_generated_code_uses_are_free_in_a_spec(dtype, bound):
    """A time stamp `t`, SCRN's `B`, a dimension `T`, and names of Python's builtins, of
    numpy's alias and of the runtime's helpers: the module spells them otherwise."""
    module, cell = build(FREE)
    errors = compare(module, cell, T=4, B=3, sizes={"I": 2, "T": 4, "N": 3}, dtype=dtype, seed=1)
    assert max(errors.values()) < bound, errors
    assert module.PARAMS["B"] == ("N", "T") and module.STATES == {"h": "T", "range": "N"}


@pytest.mark.parametrize("name, problem", [
    ("lambda", "a Python keyword"), ("None", "a Python keyword"), ("tanh", "functions"),
    ("mean", "functions"), ("where", "functions"), ("h~", "ASCII letters")])
def test_only_keywords_and_the_language_functions_are_reserved(name, problem):
    from cellc.frontend.spec import name_problem
    assert problem in name_problem(name)
    for free in ("t", "T", "B", "np", "range", "real", "params", "sizes", "empty", "gemm"):
        assert name_problem(free) is None, free


# ---- gaps 2 and 4: scalar parameters, and values of width 1 that broadcast --------------
SCALARS = """name = "scalars"
inputs = {x = "I", ts = "1"}
states = {h = "H", n = "1"}
parameters = ["W", "U", "b", "zeta", "nu", "w_B", "W_t", "w_n"]
equations = \"\"\"
s = x @ w_B
a = x @ W + h @ U + b + ts @ W_t + nu * n
k = softplus(zeta) * 2
n' = 0.9 * n + sigmoid(h @ w_n) * ts + mean(a)
h' = zeta * tanh(a) * sigmoid(s) + k * h * ts + s + n'
\"\"\"
[shapes]
zeta = []
nu = ["1"]
w_B = ["I", "1"]
"""


@pytest.mark.parametrize("dtype, bound", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_scalars_and_width_one_values_match_the_interpreter(dtype, bound):
    module, cell = build(SCALARS)
    errors = compare(module, cell, T=4, B=3, sizes={"I": 2, "H": 4}, dtype=dtype, seed=1)
    assert max(errors.values()) < bound, errors


def test_scalar_parameters_are_0d_and_their_gradients_full_sums():
    module, _ = build(SCALARS)
    assert module.PARAMS["zeta"] == () and module.PARAMS["nu"] == ()
    assert module.PARAMS["w_B"] == ("I", "1") and module.INPUTS["ts"] == "1"
    params, inputs, states = problem(module, T=4, B=3, sizes={"I": 2, "H": 4},
                                     dtype=np.float64, seed=3)
    assert params["zeta"].shape == ()
    rng = np.random.default_rng(5)
    y, final, cache = module.forward(params, inputs, states)
    dy = rng.normal(size=y.shape)
    ds = {k: rng.normal(size=v.shape) for k, v in final.items()}
    grads = module.backward(cache, dy, ds)
    assert grads.params["zeta"].shape == () and grads.params["nu"].shape == ()
    numeric, analytic = directional_derivative(module, params, inputs, states, dy, ds, rng, 1e-6)
    assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), (numeric, analytic)
    step = 1e-6                          # and zeta alone: its gradient is the whole sum
    loss = lambda z: (np.sum(module.forward(dict(params, zeta=np.asarray(z)), inputs, states)[0] * dy)
                      + sum(np.sum(v * ds[k]) for k, v in
                            module.forward(dict(params, zeta=np.asarray(z)), inputs, states)[1].items()))
    numeric = (loss(params["zeta"] + step) - loss(params["zeta"] - step)) / (2 * step)
    assert abs(numeric - grads.params["zeta"]) <= 1e-6 * max(1.0, abs(numeric))


@pytest.mark.parametrize("change, message", [
    (lambda p, x: (dict(p, zeta=np.ones(1)), x), "must have 0 dimensions"),
    (lambda p, x: (p, dict(x, ts=np.ones((4, 3, 2)))), "the spec gives this dimension size 1"),
    (lambda p, x: (dict(p, w_B=np.ones((2, 3))), x), "the spec gives this dimension size 1")])
def test_width_one_is_checked_at_run_time(change, message):
    module, _ = build(SCALARS)
    params, inputs, states = problem(module, T=4, B=3, sizes={"I": 2, "H": 4},
                                     dtype=np.float64, seed=3)
    params, inputs = change(params, inputs)
    with pytest.raises(ValueError, match=message):
        module.forward(params, inputs, states)


@pytest.mark.parametrize("dtype, bound", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_a_per_row_scalar_times_a_weight_row(dtype, bound):
    """`mean(h) @ U` with U of shape [1, H]: an outer product, as a GEMM of inner size 1."""
    module, cell = build(spec("h' = tanh(x @ W + mean(h) @ V + (sum(h) * 2 + 1) @ U + b)")
                         .replace('"b"]', '"b", "V"]'))
    assert module.PARAMS["V"] == ("1", "H") and module.PARAMS["U"] == ("1", "H")
    errors = compare(module, cell, T=4, B=3, sizes={"I": 2, "H": 4}, dtype=dtype, seed=1)
    assert max(errors.values()) < bound, errors


# ---- gap 1: weight expressions on the right of @ ----------------------------------------
WEIGHTS = """name = "weights"
inputs = ["x"]
states = ["h"]
parameters = ["V", "W", "b", "gamma", "beta", "M", "A", "C", "K"]
equations = \"\"\"
eps = 0.1
a = x @ V.T + h @ (W - W.T - gamma * eye(H)) + h @ (A @ C) + x @ (M * M) + b
g = h @ ((1 - beta) * (K + K.T) + beta * (K - K.T) / 2) + x @ V.T
h' = h + eps * tanh(a) * sigmoid(g)
\"\"\"
[shapes]
gamma = []
beta = []
V = ["H", "I"]
A = ["H", "R"]
"""


@pytest.mark.parametrize("dtype, bound", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_weight_expressions_match_the_interpreter(dtype, bound):
    module, cell = build(WEIGHTS)
    assert set(module.PARAMS) == {"V", "W", "b", "gamma", "beta", "M", "A", "C", "K"}
    errors = compare(module, cell, T=4, B=3, sizes={"I": 2, "H": 4}, dtype=dtype, seed=1)
    assert max(errors.values()) < bound, errors


def test_weight_expression_gradients_are_directional_derivatives():
    """Through transposes, sums, scalar parameters, eye, products and Hadamard products:
    each gradient pulled back to the parameters the matrices were made from."""
    module, _ = build(WEIGHTS)
    params, inputs, states = problem(module, T=4, B=3, sizes={"I": 2, "H": 4},
                                     dtype=np.float64, seed=3)
    rng = np.random.default_rng(6)
    y, final, _ = module.forward(params, inputs["x"], states)
    dy = rng.normal(size=y.shape)
    ds = {k: rng.normal(size=v.shape) for k, v in final.items()}
    numeric, analytic = directional_derivative(module, params, inputs, states, dy, ds, rng, 1e-6)
    assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), (numeric, analytic)


def test_a_weight_expression_is_the_weight_written_out():
    """`h @ (W - W.T)` gives what `h @ D` gives with D = W - W.T passed as a parameter,
    and its gradient in W is dD - dD.T."""
    module, _ = build(spec("h' = tanh(x @ U + h @ (W - W.T) + b)"))
    plain, _ = build(spec("h' = tanh(x @ U + h @ W + b)"))
    params, inputs, states = problem(module, T=5, B=2, sizes={"I": 3, "H": 4},
                                     dtype=np.float64, seed=2)
    D = params["W"] - params["W"].T
    y, _, cache = module.forward(params, inputs["x"], states)
    y2, _, cache2 = plain.forward(dict(params, W=D), inputs["x"], states)
    assert np.allclose(y, y2, rtol=0, atol=1e-14)
    g, g2 = module.backward(cache, np.ones_like(y)), plain.backward(cache2, np.ones_like(y))
    assert np.allclose(g.params["W"], g2.params["W"] - g2.params["W"].T, rtol=0, atol=1e-13)
