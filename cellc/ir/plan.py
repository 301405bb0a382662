"""The schedule's IR (made by `passes/schedule.py`): one time step as stages of fused
GEMMs and fused elementwise regions, split into the program that runs once over all
steps before the time loop (`static`) and the one that runs every step (`step`)."""
from __future__ import annotations

from typing import NamedTuple

from .cell import Cell, Node


class Gemm(NamedTuple):
    """`operand @ [weights...]`, one column block per affine node."""

    operand: str
    nodes: tuple[Node, ...]   # the affine nodes, in column order


class Region(NamedTuple):
    """A maximal set of elementwise nodes computed in one fused loop nest over the
    units of one dimension (a per-row scalar joins the region of the dimension it was
    reduced over)."""

    name: str                 # e.g. "step1", "step1b" (naming.region)
    dim: str
    nodes: tuple[Node, ...]
    inputs: tuple[str, ...]   # values read but computed elsewhere, in spec order
    outputs: tuple[str, ...]  # nodes read outside this region (live-out)


class Stage(NamedTuple):
    """Stage k runs its GEMMs, then its regions in order (a region may read a per-row
    scalar an earlier region of the stage computed)."""

    gemms: tuple[Gemm, ...]
    regions: tuple[Region, ...]


class Plan(NamedTuple):
    cell: Cell
    static: tuple[Stage, ...]
    step: tuple[Stage, ...]
    static_values: frozenset     # names computed by the static program (plus inputs)

    def programs(self):
        """("static", stages) and ("step", stages)."""
        return (("static", self.static), ("step", self.step))

    def regions(self):
        """(program, region) for every region, in forward order."""
        return [(kind, r) for kind, stages in self.programs() for st in stages
                for r in st.regions]

    def gemms(self):
        """(program, gemm) for every fused GEMM, in forward order."""
        return [(kind, g) for kind, stages in self.programs() for st in stages
                for g in st.gemms]


def typecheck_plan(plan: Plan) -> Plan:
    """Every value a region or GEMM reads is computed before it (in an earlier stage, by
    an earlier region of its stage, by the static program, or it is an input, a state or
    a parameter), and every elementwise node is in exactly one region."""
    cell = plan.cell
    known = {v.name for v in cell.inputs + cell.states} | {p.name for p in cell.params}
    placed = []
    for _, stages in plan.programs():
        for stage in stages:
            for g in stage.gemms:
                assert g.operand in known, f"GEMM reads {g.operand} before it is computed"
                known.update(n.name for n in g.nodes)
            for r in stage.regions:
                missing = set(r.inputs) - known
                assert not missing, f"{r.name} reads {sorted(missing)} before they are computed"
                known.update(n.name for n in r.nodes)
                placed += [n.name for n in r.nodes]
    elementwise = [n.name for n in cell.nodes if not n.is_matmul]
    assert sorted(placed) == sorted(elementwise), "regions do not cover the nodes"
    return plan
