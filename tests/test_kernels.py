"""Every shipped spec: compiled kernels agree with the NumPy interpreter."""
import numpy as np
import pytest
from cellcheck import (all_sizes, compare, directional_derivative, generated, poisoned, problem,
                       rel_err)
from conftest import SPECS

from cellc import naming

CASES = [  # (T, B, I, H, upstream, nonzero initial states)
    (6, 3, 3, 5, "both", True),
    (1, 1, 4, 4, "outputs", False),
    (4, 2, 5, 3, "states", True),
    (3, 2, 2, 6, "outputs", True),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "T{}-B{}-I{}-H{}-{}-{}".format(
    *c[:5], "h0" if c[5] else "zero"))
def test_float64_matches_interpreter(spec, case):
    T, B, I, H, which, nonzero = case
    module, cell = generated(spec)
    errors = compare(module, cell, T=T, B=B, sizes={"I": I, "H": H}, dtype=np.float64, seed=T * B,
                     which=which, nonzero_states=nonzero)
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-10, f"{worst}: {errors[worst]:.3g}"


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_float32_matches_interpreter(spec):
    module, cell = generated(spec)
    errors = compare(module, cell, T=8, B=4, sizes={"I": 6, "H": 10}, dtype=np.float32, seed=7)
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-4, f"{worst}: {errors[worst]:.3g}"


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_gradient_is_a_directional_derivative(spec):
    """Kernels against central finite differences along one random direction of
    every parameter, input and initial state at once."""
    module, _ = generated(spec)
    sizes = {"I": 3, "H": 4}
    params, inputs, states = problem(module, T=5, B=2, sizes=sizes, dtype=np.float64, seed=11)
    rng = np.random.default_rng(5)
    y, final, _ = module.forward(params, inputs, states)
    dy = rng.normal(size=y.shape)
    ds = {k: rng.normal(size=v.shape) for k, v in final.items()}
    numeric, analytic = directional_derivative(module, params, inputs, states, dy, ds, rng, 1e-5)
    assert abs(numeric - analytic) <= 1e-7 * max(1.0, abs(analytic))


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_empty_sequence_and_batch(spec):
    """T=0 returns the initial states unchanged; B=0 gives empty results."""
    module, _ = generated(spec)
    sizes = {"I": 3, "H": 4}
    params, inputs, states = problem(module, T=0, B=2, sizes=sizes, dtype=np.float64, seed=1)
    width = all_sizes(module, sizes)[module.OUTPUT_DIM]
    y, final, cache = module.forward(params, inputs, states)
    assert y.shape == (0, 2, width)
    for k in states:
        np.testing.assert_array_equal(final[k], states[k])
    ds = {k: np.ones_like(v) for k, v in final.items()}
    grads = module.backward(cache, None, ds)
    for k in states:
        np.testing.assert_array_equal(grads.states[k], ds[k])
    assert all(np.all(g == 0) for g in grads.params.values())
    params, inputs, states = problem(module, T=3, B=0, sizes=sizes, dtype=np.float64, seed=1)
    y, final, cache = module.forward(params, inputs, states)
    assert y.shape == (3, 0, width)
    grads = module.backward(cache, np.zeros_like(y))
    assert all(np.all(g == 0) for g in grads.params.values())


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_float32_stays_float32_inside_kernels(spec):
    """A float64 literal would silently promote a float32 kernel. Compile the module
    afresh (Numba cannot inspect cached code) and look for `double` in its LLVM IR."""
    module, _ = generated(spec)
    source = open(module.__file__).read()
    assert "cache=_numba_cache_is_ours()" in source
    source = source.replace("cache=_numba_cache_is_ours()", "cache=False")
    fresh = {"__name__": f"fresh_{spec.stem}"}
    exec(compile(source, module.__file__, "exec"), fresh)
    params, inputs, states = problem(module, T=2, B=2, sizes={"I": 3, "H": 4},
                                     dtype=np.float32, seed=0)
    y, _, cache = fresh["forward"](params, inputs, states)
    fresh["backward"](cache, np.ones_like(y))
    fresh["forward"](params, inputs, states, need_grad=False)
    for name in (naming.steps(naming.FORWARD), naming.steps(naming.BACKWARD),
                 naming.steps(naming.INFER)):
        steps = fresh[name]
        (signature,) = steps.signatures
        assert "float32" in str(signature)
        ir = steps.inspect_llvm(signature)
        assert "store float" in ir or "store <" in ir     # the kernels' stores are part of it
        assert " double" not in ir, f"{name} promotes to float64"
    step_kernels = [f for f in fresh.values()
                    if getattr(f, "targetoptions", {}).get("inline") == "always"]
    assert step_kernels and not any(k.signatures for k in step_kernels)   # inlined only


def test_forward_is_deterministic():
    module, _ = generated(SPECS[0])
    params, inputs, states = problem(module, T=5, B=3, sizes={"I": 3, "H": 4},
                                     dtype=np.float32, seed=0)
    y1, _, c1 = module.forward(params, inputs, states)
    y2, _, c2 = module.forward(params, inputs, states)
    g1, g2 = module.backward(c1, np.ones_like(y1)), module.backward(c2, np.ones_like(y2))
    assert np.array_equal(y1, y2)
    assert all(np.array_equal(g1.params[k], g2.params[k]) for k in g1.params)
    assert rel_err(y1, y2) == 0


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
@pytest.mark.parametrize("dtype,scale", [(np.float32, 1e4), (np.float64, 1e30)])
def test_saturated_gates_give_no_nan(spec, dtype, scale):
    """Pre-activations far beyond the range of exp: sigmoid(-1e4) goes through
    exp(1e4) = inf and must come out as 0, with derivative 0, never NaN."""
    module, _ = generated(spec)
    params, inputs, states = problem(module, T=4, B=3, sizes={"I": 3, "H": 4}, dtype=dtype,
                                     seed=2, nonzero_states=False)
    x = {k: (np.sign(v) * scale).astype(dtype) for k, v in inputs.items()}
    y, final, cache = module.forward(params, x, states)
    grads = module.backward(cache, np.ones_like(y), {k: np.ones_like(v) for k, v in final.items()})
    for name, value in [("outputs", y), *final.items(), *grads.params.items(),
                        *grads.states.items()]:
        assert not np.isnan(value).any(), f"NaN in {name}"
    assert np.isfinite(y).all()


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_without_grad_matches_the_training_forward(spec, dtype):
    """forward(..., need_grad=False) saves nothing, runs the steps in chunks (T = 70 is
    two), keeps a state in two alternating buffers, and gives the training forward's
    outputs and final states, with ragged lengths too; backward refuses its cache."""
    module, _ = generated(spec)
    params, inputs, states = problem(module, T=70, B=4, sizes={"I": 3, "H": 5}, dtype=dtype, seed=3)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    for lengths in (None, [70, 64, 1, 0]):
        with poisoned(module):
            y, final, _ = module.forward(params, inputs, states, lengths=lengths)
            y2, final2, cache = module.forward(params, inputs, states, lengths=lengths,
                                               need_grad=False)
        assert cache is None and y2.dtype == dtype
        assert rel_err(y2, y) < tol
        assert all(rel_err(final2[k], final[k]) < tol for k in final)
    with pytest.raises(ValueError, match="need_grad=False"):
        module.backward(cache, np.ones_like(y2))
