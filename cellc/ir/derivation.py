"""The derivation's IR (made by `passes/derive.py`): each fused region's backward pass
as SymPy expressions, and what forward saves for it.

A region with reductions runs one loop over the units of a row per *level* (the number
of reductions on a node's longest path inside the region); backward runs the levels in
reverse, P down to 0. Loop p computes the adjoints of the vectors of level p (seeded by
`d__v` from outside the region), adds up over the units what they send to the per-row
scalars they read (`acc__d__s`), keeps in a row of scratch the adjoints that lower
levels read, and after the loop gives the scalars of level p their whole adjoints.
"""
from __future__ import annotations

from typing import NamedTuple

import sympy

from .plan import Plan, Region

Assignment = tuple[str, sympy.Expr]


class BackwardLoop(NamedTuple):
    """One backward loop over the units of a row (one level), then per-row scalars."""

    level: int
    temps: tuple[Assignment, ...]     # shared subexpressions, per unit
    scratch: tuple[Assignment, ...]   # (vector v, its whole adjoint d__v), kept in a row
    sums: tuple[Assignment, ...]      # acc__d__s += ..., over the units
    scalars: tuple[Assignment, ...]   # d__s = ..., per row after the loop


class RegionGrad(NamedTuple):
    region: Region
    loops: tuple[BackwardLoop, ...]   # levels P..0; the last also stores the grads
    grads: tuple[Assignment, ...]     # (region input, its adjoint), vectors in loop 0,
                                      # per-row scalars after it
    reads: tuple[str, ...]            # forward values the expressions read, spec order
    seeds: tuple[str, ...]            # live-out nodes whose adjoint comes in
    levels: dict                      # node name -> level (inputs: 0)


class Derivation(NamedTuple):
    plan: Plan
    grads: dict                       # region name -> RegionGrad
    saved: frozenset                  # forward values the backward pass reads
