"""Property-based: Hypothesis writes random valid cells; each compiles, and its kernels
match the interpreter and finite differences. This is what shows the compiler is
general rather than an LSTM template."""
import re
import tempfile
from pathlib import Path

import numpy as np
from cellcheck import directional_derivative, rel_err
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellc.reference import interpreter
from cellc.driver import compile_bytes
from cellc.runtime.loader import import_file

UNARY = ["sigmoid({})", "tanh({})", "softplus({})", "exp(-softplus({}))", "relu({})", "abs({})"]
UPDATES = [
    "{a} * {s} + (1 - {a}) * {b}",
    "{s} + 0.5 * {a}",
    "tanh({a}) * {b} + 0.25 * {s}",
    "{a} / (1 + {b} * {b})",
    "max({a}, {b}) * {s} + min({a}, {s})",
    "{a} ** 2 - {s} * {b} / 2",
    "log(1 + {a} * {a}) + sqrt(1 + {s} * {s}) * {b}",
    "{a} * tanh({s}) - {b} ** 3 / 3",
]


@st.composite
def cells(draw):
    n_states = draw(st.integers(1, 2))
    n_gates = draw(st.integers(1, 3))
    extra_input = draw(st.booleans())
    states = [f"s{m}" for m in range(n_states)]
    params, equations, shapes = [], [], []
    for j in range(n_gates):
        terms = [f"x @ W{j}x"]
        params.append(f"W{j}x")
        if extra_input and draw(st.booleans()):
            terms.append(f"u @ W{j}u")
            params.append(f"W{j}u")
        for s in states:
            if draw(st.booleans()):
                terms.append(f"{s} @ W{j}{s}")
                params.append(f"W{j}{s}")
        if j > 0 and draw(st.booleans()):
            i, s = draw(st.integers(0, j - 1)), draw(st.sampled_from(states))
            terms.append(f"(g{i} * {s}) @ W{j}r")      # a GEMM between elementwise stages
            params.append(f"W{j}r")
        if draw(st.booleans()):
            terms.append(f"p{j} * {draw(st.sampled_from(states))}")   # diagonal parameter
            params.append(f"p{j}")
        terms.append(f"b{j}")
        params.append(f"b{j}")
        fn = draw(st.sampled_from(UNARY))
        equations.append(f"g{j} = " + fn.format(" + ".join(terms)))
    gates = [f"g{j}" for j in range(n_gates)]
    updates = []
    for m, s in enumerate(states):
        a, b = draw(st.sampled_from(gates)), draw(st.sampled_from(gates))
        update = draw(st.sampled_from(UPDATES)).format(a=a, b=b, s=s)
        if m > 0 and draw(st.booleans()):
            update += " + 0.5 * tanh(s0')"            # reads another state's new value
        updates.append(f"{s}' = {update}")
    for g in gates:
        if not any(re.search(rf"\b{g}\b", u) for u in updates):
            updates[-1] += f" + 0.1 * {g}"
    equations += updates
    output = ""
    if draw(st.booleans()):
        with_bias = draw(st.booleans())      # without a bias the output is itself a GEMM
        equations.append("y = s0' @ W_out" + (" + b_out" if with_bias else ""))
        params += ["W_out", "b_out"] if with_bias else ["W_out"]
        shapes.append('W_out = ["H", "Q"]')
        output = 'output = "y"\n'
    inputs = '{x = "I", u = "U"}' if extra_input else '["x"]'
    if extra_input and not any("@ W" in e and "u @" in e for e in equations):
        equations[0] = equations[0].replace("x @ W0x", "x @ W0x + u @ W0u")
        params.insert(1, "W0u")
    text = (f'name = "random_cell"\ninputs = {inputs}\nstates = {states!r}\n'.replace("'", '"')
            + f"parameters = {params!r}\n".replace("'", '"') + output
            + 'equations = """\n' + "\n".join(equations) + '\n"""\n'
            + ("[shapes]\n" + "\n".join(shapes) + "\n" if shapes else ""))
    return text


def build(text):
    compiled = compile_bytes(text.encode(), "random_cell.toml")
    directory = Path(tempfile.mkdtemp(prefix="cellc-random-"))
    path = directory / f"random_{abs(hash(text))}.py"
    path.write_text(compiled.source)
    return import_file(path, path.stem), compiled.cell


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cells(), st.integers(0, 2**16))
def test_random_cell_kernels_match_interpreter_and_finite_differences(text, seed):
    module, cell = build(text)
    rng = np.random.default_rng(seed)
    sizes = {"I": 3, "H": 4, "U": 2, "Q": 5}
    sizes = {d: sizes[d] for d in module.DIMS}
    T, B = 4, 2
    params = module.init_params(dtype=np.float64, seed=seed, **sizes)
    inputs = {k: rng.normal(size=(T, B, sizes[d])) for k, d in module.INPUTS.items()}
    states = {k: rng.normal(scale=0.5, size=(B, sizes[d])) for k, d in module.STATES.items()}
    y, final, cache = module.forward(params, inputs, states)
    dy = rng.normal(size=y.shape)
    ds = {k: rng.normal(size=v.shape) for k, v in final.items()}
    grads = module.backward(cache, dy, ds)

    y_ref, final_ref, tape = interpreter.forward(cell, params, inputs, states)
    dp, dx, d0 = interpreter.backward(cell, tape, dy, ds)
    assert rel_err(y, y_ref) < 1e-10, text
    for k in final:
        assert rel_err(final[k], final_ref[k]) < 1e-10, text
    for mine, ref in ((grads.params, dp), (grads.inputs, dx), (grads.states, d0)):
        for k in ref:
            assert rel_err(mine[k], ref[k]) < 1e-9, f"d{k}\n{text}"

    numeric, analytic = directional_derivative(module, params, inputs, states, dy, ds, rng, 1e-6)
    assert abs(numeric - analytic) <= 1e-5 * max(1.0, abs(analytic)), text
