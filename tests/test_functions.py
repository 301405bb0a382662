"""The function registry: derivatives against finite differences, and the fast float32
versions against float64 libm at the error bounds documented in cellc/ir/functions.py."""
import numpy as np
import pytest
import sympy

from cellc.ir.functions import FUNCTIONS
from cellc.reference.interpreter import evaluate
from cellc.ir.cell import symbol

X = np.concatenate([np.linspace(-30, 30, 200_001), [-1e4, -100, -20, 0.0, 20, 100, 1e4]])


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_derivative_matches_finite_differences(name):
    fn = FUNCTIONS[name]
    args = [symbol("a"), symbol("b"), symbol("c")][: fn.spec.arity]
    expr = fn(*args)
    rng = np.random.default_rng(0)
    env = {"a": rng.uniform(0.1, 2.0, 50), "b": rng.uniform(-2.0, 2.0, 50),
           "c": rng.uniform(-2.0, 2.0, 50)}
    if name == "where":         # a condition of both signs, branches that differ
        env["a"] = rng.choice([-1.0, 0.0, 1.0], 50)
    if name == "mod":           # away from b = 0, where a / b jumps between integers
        env["b"] = rng.choice([-1.0, 1.0], 50) * rng.uniform(0.5, 2.0, 50)
    for k, a in enumerate(args):
        partial = evaluate(sympy.diff(expr, a), env)
        up, down = dict(env), dict(env)
        up[a.name] = env[a.name] + 1e-6
        down[a.name] = env[a.name] - 1e-6
        numeric = (evaluate(expr, up) - evaluate(expr, down)) / 2e-6
        np.testing.assert_allclose(partial, numeric, rtol=1e-6, atol=1e-8, err_msg=f"d{name}/d{a}")


def compiled_helpers():
    """The kernels' tanh and sigmoid, from the runtime every generated module carries."""
    import numba as nb
    from cellc.backend.numba import runtime

    @nb.njit(error_model="numpy")
    def apply(x, out_t, out_s):
        for i in range(x.shape[0]):
            out_t[i] = runtime._tanh(x[i])
            out_s[i] = runtime._sigmoid(x[i])
    return apply


@pytest.mark.parametrize("dtype,tanh_bound,sigmoid_bound",
                         [(np.float32, 4e-7, 3e-7), (np.float64, 1e-15, 1e-15)])
def test_fast_activations_within_documented_bounds(dtype, tanh_bound, sigmoid_bound):
    apply = compiled_helpers()
    x = X.astype(dtype)
    t, s = np.empty_like(x), np.empty_like(x)
    apply(x, t, s)
    exact_t = np.tanh(x.astype(np.float64))
    exact_s = 0.5 + 0.5 * np.tanh(0.5 * x.astype(np.float64))
    assert np.max(np.abs(t - exact_t)) <= tanh_bound
    assert np.max(np.abs(s - exact_s)) <= sigmoid_bound
    big = np.abs(exact_t) > 1e-3
    assert np.max(np.abs(t - exact_t)[big] / np.abs(exact_t[big])) <= tanh_bound
    assert np.all(np.abs(t) <= 1) and np.all((s >= 0) & (s <= 1))
    np.testing.assert_array_equal(t[[0, -1]], [-1, 1])       # saturated exactly
    nan = np.array([np.nan], dtype)
    apply(nan, t[:1], s[:1])
    assert np.isnan(t[0]) and np.isnan(s[0])
