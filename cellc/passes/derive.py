"""Pass 3: derive the backward pass symbolically, and decide what forward saves for it.

For each fused elementwise region, reverse-mode differentiation is done on the SymPy
expressions (vector-Jacobian products): the adjoint of a node is its incoming adjoint
`d__n` (from outside the region) plus, for every node reading it, that reader's
adjoint times `sympy.diff(reader, node)`. The adjoints of the region's inputs are
what the kernel returns; they are simplified together with `sympy.cse`.

Derivatives reuse saved activations: every occurrence of a node's own expression in
a derivative is replaced by the node's symbol, so sigmoid' becomes `i*(1 - i)`.

The forward values these expressions read, plus the operands of every GEMM (for the
weight gradients), are exactly what the forward pass must save.
"""
from __future__ import annotations

from typing import NamedTuple

import sympy

from ..ir import symbol
from .schedule import Plan, Region


def adjoint(name: str) -> str:
    """Name of the adjoint (gradient) of value `name`."""
    return "d__" + name


class RegionGrad(NamedTuple):
    region: Region
    temps: tuple[tuple[str, sympy.Expr], ...]   # CSE temporaries, in order
    grads: tuple[tuple[str, sympy.Expr], ...]   # (region input, its adjoint)
    reads: tuple[str, ...]                       # forward values the expressions read
    seeds: tuple[str, ...]                       # live-out nodes whose adjoint comes in


class Derivation(NamedTuple):
    plan: Plan
    static: dict[str, RegionGrad]   # region name -> gradient
    step: dict[str, RegionGrad]
    saved: frozenset                # forward values the backward pass reads


def derive(plan: Plan) -> Derivation:
    cell = plan.cell
    reuse = {n.expr: symbol(n.name) for n in cell.nodes
             if not n.is_matmul and not n.expr.is_Atom}
    grads = {}
    saved = set()
    for program in (plan.static, plan.step):
        for stage in program:
            for gemm in stage.gemms:
                saved.add(gemm.operand)
            for region in stage.regions:
                grads[region.name] = region_grad(region, reuse)
                saved.update(grads[region.name].reads)
    static = {r.name: grads[r.name] for st in plan.static for r in st.regions}
    step = {r.name: grads[r.name] for st in plan.step for r in st.regions}
    return Derivation(plan, static, step, frozenset(saved))


def region_grad(region: Region, reuse: dict) -> RegionGrad:
    def partial(node, wrt: str):
        return sympy.diff(node.expr, symbol(wrt)).xreplace(reuse)

    readers: dict[str, list] = {}
    for node in region.nodes:
        for r in node.reads():
            readers.setdefault(r, []).append(node)
    adj: dict[str, sympy.Expr] = {}
    for node in reversed(region.nodes):
        terms = [symbol(adjoint(node.name))] if node.name in region.outputs else []
        terms += [adj[r.name] * partial(r, node.name) for r in readers.get(node.name, [])]
        adj[node.name] = sympy.Add(*terms)
    inputs = region.inputs
    exprs = [sympy.Add(*[adj[r.name] * partial(r, u) for r in readers[u]]) for u in inputs]
    temps, reduced = sympy.cse(exprs, symbols=sympy.numbered_symbols("t__", real=True),
                               order="canonical")
    used = set().union(*(e.free_symbols for _, e in temps), *(e.free_symbols for e in reduced))
    not_forward = {t.name for t, _ in temps} | {adjoint(n) for n in region.outputs}
    reads = sorted(s.name for s in used if s.name not in not_forward)
    return RegionGrad(region, tuple((t.name, e) for t, e in temps),
                      tuple(zip(inputs, reduced)), tuple(reads),
                      tuple(n for n in region.outputs))
