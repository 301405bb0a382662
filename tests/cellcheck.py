"""Shared helpers: run a compiled module and the NumPy interpreter on the same problem."""
from __future__ import annotations

import hashlib
import importlib
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from cellc.driver import compile_bytes
from cellc.frontend.spec import read_spec
from cellc.passes import split
from cellc.reference import interpreter
from cellc.runtime.loader import import_file


def generated(spec_path):
    """(generated module, split IR) for a spec shipped in specs/."""
    cell = split(read_spec(spec_path))
    return importlib.import_module(f"generated.{cell.name}"), cell


def build(text: str | bytes, directory: Path | None = None):
    """(module, split IR) of a spec's text: compiled, its bytes written to a file and
    imported from there, as Python and Numba's cache see any generated module."""
    raw = text.encode() if isinstance(text, str) else text
    irs = compile_bytes(raw, "cell.toml")
    directory = directory or Path(tempfile.mkdtemp(prefix="cellc-test-"))
    name = f"{irs.cell.name}_{hashlib.sha256(raw).hexdigest()[:12]}"
    path = directory / f"{name}.py"
    path.write_bytes(irs.source.encode("utf-8"))
    return import_file(path, name), irs.cell


@contextmanager
def poisoned(module):
    """The module's fresh memory filled with NaN while inside: a kernel that reads part
    of a buffer before anything wrote it then gives NaN instead of a plausible number."""
    def empty(shape, dtype):
        return np.full(shape, np.nan, dtype)
    original = module._empty
    module._empty = empty
    try:
        yield module
    finally:
        module._empty = original


def all_sizes(module, sizes: dict) -> dict:
    """`sizes` with every other dimension of the cell bound too: an LSTMP's P gets
    H - 1 (at least 1), so a cell whose states differ in width is tested that way."""
    sizes = dict(sizes)
    for k, dim in enumerate(d for d in module.DIMS if d not in sizes):
        sizes[dim] = max(1, sizes.get("H", 4) - 1 - k)
    return sizes


def problem(module, *, T, B, sizes, dtype, seed, nonzero_states=True):
    rng = np.random.default_rng(seed)
    sizes = all_sizes(module, sizes)
    params = module.init_params(dtype=dtype, seed=seed, **sizes)
    sizes = {**sizes, "1": 1}           # a width of one (cellc.ir.cell.ONE)
    inputs = {k: rng.normal(size=(T, B, sizes[d])).astype(dtype) for k, d in module.INPUTS.items()}
    states = ({k: rng.normal(scale=0.5, size=(B, sizes[d])).astype(dtype)
               for k, d in module.STATES.items()} if nonzero_states else None)
    return params, inputs, states


def upstream(module, y, final, *, which, seed):
    rng = np.random.default_rng(seed + 1)
    dy = rng.normal(size=y.shape).astype(y.dtype) if which in ("outputs", "both") else None
    ds = ({k: rng.normal(size=v.shape).astype(v.dtype) for k, v in final.items()}
          if which in ("states", "both") else None)
    return dy, ds


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return np.inf
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def compare(module, cell, *, T, B, sizes, dtype, seed, which="both", nonzero_states=True):
    """Largest relative error of every output and gradient, kernels vs interpreter."""
    params, inputs, states = problem(module, T=T, B=B, sizes=sizes, dtype=dtype, seed=seed,
                                     nonzero_states=nonzero_states)
    x = inputs if len(inputs) > 1 else next(iter(inputs.values()))
    with poisoned(module):
        y, final, cache = module.forward(params, x, states)
        dy, ds = upstream(module, y, final, which=which, seed=seed)
        grads = module.backward(cache, dy, ds)
    y_ref, final_ref, tape = interpreter.forward(cell, params, inputs, states)
    dp, dx, d0 = interpreter.backward(cell, tape, dy, ds)
    errors = {"outputs": rel_err(y, y_ref)}
    errors.update({f"final {k}": rel_err(final[k], final_ref[k]) for k in final_ref})
    errors.update({f"d {k}": rel_err(grads.params[k], dp[k]) for k in dp})
    errors.update({f"d {k}": rel_err(grads.inputs[k], dx[k]) for k in dx})
    errors.update({f"d {k}0": rel_err(grads.states[k], d0[k]) for k in d0})
    for name, value in [("outputs", y), *final.items(), *grads.params.items(),
                        *grads.inputs.items(), *grads.states.items()]:
        assert np.asarray(value).dtype == dtype, f"{name} came back as {np.asarray(value).dtype}"
    return errors


def directional_derivative(module, params, inputs, states, dy, ds, rng, eps):
    """(central finite difference, analytic) derivative of sum(y*dy) + sum(final*ds)
    along one random direction of every parameter, input and initial state at once."""
    y, final, cache = module.forward(params, inputs, states)
    grads = module.backward(cache, dy, ds)
    groups = (params, inputs, states)
    direction = [{k: rng.normal(size=v.shape) for k, v in g.items()} for g in groups]

    def loss(step):
        moved = ({k: v + step * d[k] for k, v in g.items()} for g, d in zip(groups, direction))
        y, final, _ = module.forward(*moved)
        return np.sum(y * dy) + sum(np.sum(final[k] * ds[k]) for k in final)

    numeric = (loss(eps) - loss(-eps)) / (2 * eps)
    analytic = sum(np.sum(g[k] * d[k]) for g, d in zip(
        (grads.params, grads.inputs, grads.states), direction) for k in d)
    return numeric, analytic


def layer_directional_check(layer, run, params, x, states, seed=2, step=1e-6):
    """(numeric, analytic, outputs, gradients) for a `Layer`: the derivative of
    sum(y * dy) + sum(finals * ds) along one random direction in parameters, input and
    initial states, by central differences of `run(params, x, states)` (which must
    replay its masks) and from `layer.backward`."""
    rng = np.random.default_rng(seed)
    y, finals, cache = run(params, x, states)
    dy = rng.normal(size=y.shape)
    ds = {k: rng.normal(size=v.shape) for k, v in finals.items()}
    g = layer.backward(cache, dy, ds)
    groups, grads = (params, {"x": x}, states), (g.params, g.inputs, g.states)
    direction = [{k: rng.normal(size=v.shape) for k, v in group.items()} for group in groups]

    def loss(h):
        p, xs, s = ({k: v + h * d[k] for k, v in group.items()}
                    for group, d in zip(groups, direction))
        y, finals, _ = run(p, xs["x"], s)
        return np.sum(y * dy) + sum(np.sum(finals[k] * ds[k]) for k in finals)

    numeric = (loss(step) - loss(-step)) / (2 * step)
    analytic = sum(np.sum(gr[k] * d[k]) for gr, d in zip(grads, direction) for k in d)
    return numeric, analytic, y, g
