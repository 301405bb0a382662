"""The reference semantics: a plain NumPy interpreter of the IR, float64 by default.

It walks the nodes of one time step in order, for each step, and differentiates by
the textbook rule (one node at a time, in reverse, `sympy.diff` of that node's
expression evaluated numerically). It deliberately shares nothing with the code
generator but the IR: no fusion, no CSE, no saving decisions. It is slow and simple
enough to trust by reading; every compiled kernel is tested against it, and it is
tested against finite differences.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import sympy

from .. import naming
from ..ir import weights
from ..ir.cell import ONE, Cell, RowSum, size_symbol, symbol
from ..ir.functions import CellFunction


def evaluate(expr: sympy.Expr, env: dict[str, np.ndarray], functions: dict | None = None):
    """Value of a SymPy expression whose symbols are IR names bound in `env`.

    `functions` maps function names to implementations (default: the registry's NumPy
    ones); the benchmark passes JAX's to trace the same IR."""
    if expr.is_Symbol:
        return env[expr.name]
    if expr.is_Number:
        return float(expr)
    args = [evaluate(a, env, functions) for a in expr.args]
    with np.errstate(all="ignore"):
        if expr.is_Add:
            return sum(args[1:], args[0])
        if expr.is_Mul:
            out = args[0]
            for a in args[1:]:
                out = out * a
            return out
        if expr.is_Pow:
            exponent = expr.args[1]
            return args[0] ** (int(exponent) if exponent.is_Integer else float(exponent))
        if isinstance(expr, RowSum):
            return args[0].sum(axis=-1, keepdims=True)
        if isinstance(expr, CellFunction):
            fn = functions[expr.spec.name] if functions else expr.spec.numpy
            return fn(*args)
    raise TypeError(f"interpreter cannot evaluate {expr.func}")


@lru_cache(maxsize=None)
def _partial(expr: sympy.Expr, wrt: str) -> sympy.Expr:
    return sympy.diff(expr, symbol(wrt))


def _as_dict(cell: Cell, values, names) -> dict:
    if values is None:
        return {}
    if isinstance(values, dict):
        return dict(values)
    assert len(names) == 1, "pass a dict when the cell has several of these"
    return {names[0]: values}


def forward(cell: Cell, params, inputs, states=None):
    """Run the cell over x[T, B, *]. Returns (outputs[T, B, *], final states, tape)."""
    inputs = {k: np.asarray(v, dtype=np.float64)
              for k, v in _as_dict(cell, inputs, [v.name for v in cell.inputs]).items()}
    T, B = next(iter(inputs.values())).shape[:2]
    params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    sizes = _sizes(cell, params, inputs)
    for p in cell.params:               # weight expressions, once, before the steps
        if p.derived is not None:
            params[p.name] = matrix_value(p.derived, params, sizes)
    states = {k: np.asarray(v, dtype=np.float64) for k, v in (states or {}).items()}
    current = {s.name: states.get(s.name, np.zeros((B, sizes[s.dim]))) for s in cell.states}
    initial = dict(current)
    outputs, tape = [], []
    for t in range(T):
        env = {size_symbol(d).name: float(n) for d, n in sizes.items()}
        env.update(params)
        env.update(current)
        env.update({k: v[t] for k, v in inputs.items()})
        for node in cell.nodes:
            if node.is_matmul:
                env[node.name] = env[node.operand] @ params[node.weight]
            else:
                value = evaluate(node.expr, env)
                env[node.name] = np.broadcast_to(value, (B, sizes[node.dim])).astype(np.float64)
        tape.append(env)
        current = {s.name: env[naming.new(s.name)] for s in cell.states}
        outputs.append(env[cell.output])
    out_dim = sizes[cell.node(cell.output).dim]
    y = np.stack(outputs) if outputs else np.zeros((0, B, out_dim))
    return y, current, {"params": params, "inputs": inputs, "initial": initial,
                        "tape": tape, "sizes": sizes, "B": B}


def backward(cell: Cell, tape, dy=None, dstates=None):
    """Gradients of sum(y*dy) + sum(final*dstates) w.r.t. params, inputs, initial states."""
    params, inputs, steps = tape["params"], tape["inputs"], tape["tape"]
    sizes, B = tape["sizes"], tape["B"]
    dim_of = cell.dim_of()
    dparams = {k: np.zeros_like(v) for k, v in params.items()}
    no_grad = {v.name for v in cell.inputs if not v.grad}       # regularizer masks
    dinputs = {k: np.zeros_like(v) for k, v in inputs.items() if k not in no_grad}
    carry = {s.name: np.zeros((B, sizes[s.dim])) for s in cell.states}
    for k, v in (dstates or {}).items():
        carry[k] = carry[k] + v
    for t in reversed(range(len(steps))):
        env = steps[t]
        adj: dict[str, np.ndarray] = {}

        def add(name, value):
            adj[name] = adj[name] + value if name in adj else value

        for s in cell.states:
            add(naming.new(s.name), carry[s.name])
        if dy is not None:
            add(cell.output, dy[t])
        for node in reversed(cell.nodes):
            g = adj.get(node.name)
            if g is None:
                continue
            if node.is_matmul:
                add(node.operand, g @ params[node.weight].T)
                dparams[node.weight] += env[node.operand].T @ g
                continue
            for name in node.reads():
                with np.errstate(all="ignore"):
                    contribution = g * evaluate(_partial(node.expr, name), env)
                if dim_of[name] == ONE:      # a per-row scalar: summed over the units it met
                    contribution = contribution.sum(axis=-1, keepdims=True)
                add(name, np.broadcast_to(contribution, (B, sizes[dim_of[name]])))
        for name in list(adj):
            if name in params:       # a scalar parameter (shape ()): the full sum
                dparams[name] += adj[name].sum(axis=0).reshape(dparams[name].shape)
            elif name in dinputs:
                dinputs[name][t] += adj[name]
        carry = {s.name: adj.get(s.name, np.zeros((B, sizes[s.dim]))) for s in cell.states}
    for p in cell.params:               # a weight expression's gradient to its parameters
        if p.derived is not None:
            grad = dparams.pop(p.name)
            for source, share in weights.pullback(p.derived, weights.Ref(p.name)):
                value = matrix_value(share, {**params, p.name: grad}, sizes)
                dparams[source] = dparams[source] + np.reshape(value, dparams[source].shape)
    return dparams, dinputs, carry


def matrix_value(m, env: dict, sizes: dict):
    """A weight expression's value (ir/weights.py), with NumPy; scalar parameters are
    0-d (or 1-element) arrays in `env`."""
    if isinstance(m, weights.Ref):
        return env[m.name]
    if isinstance(m, weights.Eye):
        return np.eye(sizes[m.dim])
    if isinstance(m, weights.Transposed):
        return matrix_value(m.a, env, sizes).T
    if isinstance(m, weights.Plus):
        return matrix_value(m.a, env, sizes) + matrix_value(m.b, env, sizes)
    if isinstance(m, weights.Scaled):
        scale = evaluate(m.scale, {s.name: np.reshape(env[s.name], ()) for s in m.scale.free_symbols})
        return scale * matrix_value(m.a, env, sizes)
    if isinstance(m, weights.Hadamard):
        return matrix_value(m.a, env, sizes) * matrix_value(m.b, env, sizes)
    if isinstance(m, weights.Product):
        return matrix_value(m.a, env, sizes) @ matrix_value(m.b, env, sizes)
    if isinstance(m, weights.Total):
        return np.sum(matrix_value(m.a, env, sizes))
    raise TypeError(f"interpreter cannot evaluate {m!r}")


def _sizes(cell: Cell, params, inputs) -> dict[str, int]:
    sizes = {ONE: 1}
    for v in cell.inputs:
        sizes[v.dim] = inputs[v.name].shape[-1]
    for p in cell.params:
        if p.derived is not None:
            continue
        for d, n in zip(p.shape, params[p.name].shape):
            assert sizes.setdefault(d, n) == n, f"size of {d} is inconsistent"
    return sizes


def init_params(cell: Cell, sizes: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Random float64 parameters for tests: uniform in [-0.5, 0.5], or in the spec's own
    `uniform(a, b)` (Phased LSTM's periods: near 0 its phase would jump at every step)."""
    rng = np.random.default_rng(seed)
    def draw(p):
        shape = () if p.shape == (ONE,) else tuple(1 if d == ONE else sizes[d] for d in p.shape)
        low, high = p.init.args if p.init.kind == "uniform" else (-0.5, 0.5)
        return np.asarray(rng.uniform(low, high, shape))
    return {p.name: draw(p) for p in cell.params if p.derived is None}
