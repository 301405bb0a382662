"""Property-based: Hypothesis writes random valid cells; each compiles to a module that
imports, its kernels match the interpreter and finite differences, and its forward that
saves nothing matches the training forward. This is what shows the compiler is general
rather than an LSTM template.

Two generators: `cells` (gates over inputs and states, GEMMs between elementwise stages,
weight expressions such as `s0 @ (W - W.T - 0.5 * eye(H))`, diagonal parameters, several
states, an output product), and `wide_cells`, whose values
have several widths: inputs used elementwise as well as through products (of the state's
width or another), several inputs of different widths (one of them perhaps of width 1, a per-row scalar),
intermediate values of a third width M, scalar parameters (shape []), reductions over
values of any width feeding any other, values read through several stages, and previous
states that nothing reads.

CELLC_RANDOM_CELLS=1000 runs that many examples of each (CI runs 15 of each: every example
compiles its kernels, a few seconds each).
"""
import os
import re

import numpy as np
from cellcheck import build, directional_derivative, poisoned, rel_err
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellc.reference import interpreter

EXAMPLES = int(os.environ.get("CELLC_RANDOM_CELLS", "15"))
SIZES = {"I": 3, "H": 4, "U": 2, "M": 5, "P": 3, "Q": 6}

UNARY = ["sigmoid({0})", "tanh({0})", "softplus({0})", "exp(-softplus({0}))", "relu({0})",
         "abs({0})", "silu({0})", "logsigmoid({0})", "sin({0})", "cos({0})",
         "({0} + 0.5 if {0} >= 0 else sigmoid({0}))",                 # minGRU's g
         "where({0} < -1 or {0} > 1, tanh({0}), {0} - {0} ** 3 / 3)"]
UPDATES = [
    "{a} * {s} + (1 - {a}) * {b}",
    "{s} + 0.5 * {a}",
    "tanh({a}) * {b} + 0.25 * {s}",
    "{a} / (1 + {b} * {b})",
    "max({a}, {b}) * {s} + min({a}, {s})",
    "{a} ** 2 - {s} * {b} / 2",
    "log(1 + {a} * {a}) + sqrt(1 + {s} * {s}) * {b}",
    "{a} * tanh({s}) - {b} ** 3 / 3",
    "{s} + dt * ({a} - {s})",                 # dt: a named constant
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
                w = f"W{j}{s}"
                weight = draw(st.sampled_from([w, f"({w} - {w}.T - 0.5 * eye(H))",
                                               f"({w}.T * {w})", f"({w} @ {w}) / 4"]))
                terms.append(f"{s} @ {weight}")          # a weight expression, or not
                params.append(w)
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
    if any("dt" in u for u in updates):
        equations.insert(0, f"dt = {draw(st.sampled_from(['0.25', '1 / 8', '2 ** -3']))}")
    text = (f'name = "random_cell"\ninputs = {inputs}\nstates = {states!r}\n'.replace("'", '"')
            + f"parameters = {params!r}\n".replace("'", '"') + output
            + 'equations = """\n' + "\n".join(equations) + '\n"""\n'
            + ("[shapes]\n" + "\n".join(shapes) + "\n" if shapes else ""))
    return text


@st.composite
def wide_cells(draw):
    """A cell whose values have several widths (see the module docstring)."""
    x_dim = draw(st.sampled_from(["I", "H"]))           # I = H: x used beside H values
    inputs = {"x": x_dim}
    if draw(st.booleans()):
        inputs["u"] = draw(st.sampled_from(["U", "H", "M", "1"]))     # "1": a per-row scalar
    states = {"s0": "H"}
    if draw(st.booleans()):
        states["s1"] = draw(st.sampled_from(["H", "P"]))
    values = {**inputs, **states}                         # readable so far: name -> width
    shapes, equations = {}, []

    def param(*dims):
        name = f"p{len(shapes)}"
        shapes[name] = list(dims)
        return name

    def project(v, dim):
        return f"{v} @ {param(values[v], dim)}"

    for j in range(draw(st.integers(1, 4))):
        dim = draw(st.sampled_from(["H", "M", x_dim]))
        names = sorted(values)
        terms = [project(draw(st.sampled_from(names)), dim)
                 for _ in range(draw(st.integers(1, 2)))]
        same = [v for v in names if values[v] == dim]
        for _ in range(draw(st.integers(0, 2)) if same else 0):
            v = draw(st.sampled_from(same))
            kind = draw(st.sampled_from(["plain", "vector", "scalar"]))
            terms.append(v if kind == "plain" else
                         f"{param(dim) if kind == 'vector' else param()} * {v}")
        if values.get("u") == "1" and draw(st.booleans()):
            terms.append(f"{param()} * u")                  # a scalar times a per-row scalar
        if draw(st.booleans()):                            # a reduction of any width
            v = draw(st.sampled_from([n for n in names if values[n] != "1"]))
            terms.append(f"0.5 * mean(tanh({v}))" if draw(st.booleans())
                         else f"0.2 * sum({v} * {param(values[v])})")
        terms.append(param(dim))
        name = f"g{j}"
        equations.append(f"{name} = " + draw(st.sampled_from(UNARY)).format(" + ".join(terms)))
        values[name] = dim
    gates = [v for v in values if v.startswith("g")]
    used = set()
    for s, dim in states.items():
        mine = [g for g in gates if values[g] == dim]
        if len(mine) >= 2 and draw(st.booleans()):
            a, b = draw(st.sampled_from(mine)), draw(st.sampled_from(mine))
            update = draw(st.sampled_from(UPDATES)).format(a=a, b=b, s=s)
            used |= {g for g in (a, b) if re.search(rf"\b{g}\b", update)}
        else:
            g = draw(st.sampled_from(gates))
            update = f"tanh({project(g, dim)})" if values[g] != dim else f"tanh({g})"
            used.add(g)
            if draw(st.booleans()):                       # or the state is never read
                update += f" + 0.5 * {s}"
        equations.append(f"{s}' = {update}")
    if any("dt" in e for e in equations):
        equations.insert(0, "dt = 0.25")
    output = ""
    if draw(st.booleans()):
        output = f'output = "{draw(st.sampled_from(gates))}"\n'
        used.add(output.split('"')[1])
    for g in gates:
        if g not in used and not any(re.search(rf"\b{g}\b", e.split("=", 1)[1])
                                     for e in equations):
            s = draw(st.sampled_from(sorted(states)))
            extra = f"0.1 * {g}" if values[g] == states[s] else f"0.1 * tanh({project(g, states[s])})"
            k = next(i for i, e in enumerate(equations) if e.startswith(f"{s}' ="))
            equations[k] += f" + {extra}"
    quote = lambda d: "{" + ", ".join(f'{k} = "{v}"' for k, v in d.items()) + "}"
    return (f'name = "wide_cell"\ninputs = {quote(inputs)}\nstates = {quote(states)}\n'
            f'parameters = [{", ".join(repr(p) for p in shapes)}]\n'.replace("'", '"') + output
            + 'equations = """\n' + "\n".join(equations) + '\n"""\n[shapes]\n'
            + "\n".join(f"{p} = {d!r}".replace("'", '"') for p, d in shapes.items()) + "\n")


def check(text, seed):
    """Kernels against the interpreter and central differences; the forward that saves
    nothing against the training forward."""
    module, cell = build(text)
    rng = np.random.default_rng(seed)
    sizes = {d: SIZES[d] for d in module.DIMS}
    widths = {**sizes, "1": 1}
    T, B = 4, 2
    params = module.init_params(dtype=np.float64, seed=seed, **sizes)
    inputs = {k: rng.normal(size=(T, B, widths[d])) for k, d in module.INPUTS.items()}
    states = {k: rng.normal(scale=0.5, size=(B, widths[d])) for k, d in module.STATES.items()}
    with poisoned(module):                  # nothing may read memory nobody wrote
        y, final, cache = module.forward(params, inputs, states)
        dy = rng.normal(size=y.shape)
        ds = {k: rng.normal(size=v.shape) for k, v in final.items()}
        grads = module.backward(cache, dy, ds)
        y2, final2, nothing = module.forward(params, inputs, states, need_grad=False)

    y_ref, final_ref, tape = interpreter.forward(cell, params, inputs, states)
    dp, dx, d0 = interpreter.backward(cell, tape, dy, ds)
    assert rel_err(y, y_ref) < 1e-10, text
    for k in final:
        assert rel_err(final[k], final_ref[k]) < 1e-10, text
    for mine, ref in ((grads.params, dp), (grads.inputs, dx), (grads.states, d0)):
        for k in ref:
            assert rel_err(mine[k], ref[k]) < 1e-9, f"d{k}\n{text}"

    assert nothing is None and rel_err(y2, y) < 1e-13, text
    assert all(rel_err(final2[k], final[k]) < 1e-13 for k in final), text

    numeric, analytic = directional_derivative(module, params, inputs, states, dy, ds, rng, 1e-6)
    assert abs(numeric - analytic) <= 1e-5 * max(1.0, abs(analytic)), text


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cells(), st.integers(0, 2**16))
def test_random_cells(text, seed):
    check(text, seed)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wide_cells(), st.integers(0, 2**16))
def test_random_cells_of_several_widths(text, seed):
    check(text, seed)
