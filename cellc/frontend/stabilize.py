"""Numerically stable forms of what papers write, applied to the IR by the front end.

A paper writes `log(sigmoid(z))`. Evaluated as written, it is log(0) = -inf once z is
below about -88 in float32 (-745 in float64), and its chain-rule derivative
(1/sigmoid(z)) * sigmoid(z) * (1 - sigmoid(z)) becomes inf * 0 = NaN. The true value,
-softplus(-z) = -z for large -z, is finite everywhere, and so is its derivative
sigmoid(-z). These rules rewrite such compositions, also when the inner function is
another equation's value (`s = sigmoid(z)`, `a = log(s)`):

    log(sigmoid(z))      -> -softplus(-z)
    log(1 - sigmoid(z))  -> -softplus(z)
    log(1 + exp(z))      -> softplus(z)
    log(exp(z))          -> z

The interpreter and the kernels both read the rewritten IR, so the reference and the
kernels stay one semantics. An equation left unused by a rewrite is dropped.
"""
from __future__ import annotations

import sympy

from ..ir.cell import Node, live_names, symbol
from ..ir.functions import exp, log, sigmoid, softplus


def _stable_log(arg, defs):
    inner = arg.xreplace(defs)           # see through other equations' values
    if isinstance(inner, sigmoid):
        return -softplus(-inner.args[0])
    if isinstance(inner, exp):
        return inner.args[0]
    rest = sympy.expand(inner - 1)        # 1 - sigmoid(z) or 1 + exp(z)
    if isinstance(-rest, sigmoid):
        return -softplus((-rest).args[0])
    if isinstance(rest, exp):
        return softplus(rest.args[0])
    return None


def stabilize(nodes: list[Node], roots: list[str]) -> list[Node]:
    """Rewrite the rules above in topologically ordered `nodes`; keep only the nodes
    that `roots` (new states and the output) still need."""
    defs: dict[sympy.Symbol, sympy.Expr] = {}

    def rewrite(arg):
        stable = _stable_log(arg, defs)
        return log(arg) if stable is None else stable

    out = []
    for node in nodes:
        if node.expr is not None and node.expr.has(log):
            node = node._replace(expr=node.expr.replace(log, rewrite))
        if node.expr is not None:
            defs[symbol(node.name)] = node.expr
        out.append(node)
    live = live_names(out, roots)
    return [n for n in out if n.name in live]
