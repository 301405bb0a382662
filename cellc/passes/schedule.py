"""Pass 2: schedule the step into stages of fused GEMMs and fused elementwise kernels.

Values split into two programs:
  static -- nodes that depend only on inputs and parameters. They run once for all
            time steps before the time loop, over T*B rows: this hoists the input
            projections `x @ W_*` of every step into one big GEMM.
  step   -- everything that depends on a previous state, run once per time step.
            New states and the output always belong here, even when they happen not
            to read a previous state: they are produced step by step.

Within a program, a node's stage is the number of GEMMs on its longest path from the
program's inputs. Stage k runs its GEMMs, then its elementwise nodes. The GEMMs of a
stage that share an operand fuse into one GEMM against the concatenated weights (all
gates' `h @ W_h*` become `h @ [W_hi | W_hf | ...]`), and the elementwise nodes of a
stage fuse into one kernel per dimension.

A per-row scalar (dimension ONE: a reduction and what is computed from it) joins the
kernel of the dimension it was reduced over, so layer normalization's mean, variance
and normalized vector are one kernel, one pass over the rows (see `derive.levels`).
"""
from __future__ import annotations

from typing import NamedTuple

from ..errors import SpecError
from ..ir.cell import ONE, Cell, Node, display_name, new_name


class Gemm(NamedTuple):
    """`operand @ [weights...]`, one column block per affine node."""

    name: str                 # buffer name, e.g. "mm__h"
    operand: str
    nodes: tuple[Node, ...]   # the affine nodes, in column order


class Region(NamedTuple):
    """A maximal set of elementwise nodes computed in one fused loop nest."""

    name: str                 # e.g. "step1_H"
    dim: str
    nodes: tuple[Node, ...]
    inputs: tuple[str, ...]   # values read but computed elsewhere
    outputs: tuple[str, ...]  # nodes read outside this region (live-out)


class Stage(NamedTuple):
    gemms: tuple[Gemm, ...]
    regions: tuple[Region, ...]


class Plan(NamedTuple):
    cell: Cell
    static: tuple[Stage, ...]
    step: tuple[Stage, ...]
    static_values: frozenset     # names computed by the static program (plus inputs)


def schedule(cell: Cell) -> Plan:
    params = {p.name for p in cell.params}
    static = {v.name for v in cell.inputs} | params
    per_step = {new_name(s.name) for s in cell.states} | {cell.output}
    for node in cell.nodes:
        if node.name not in per_step and all(r in static for r in node.reads()):
            static.add(node.name)
    readers: dict[str, set[str]] = {}
    for node in cell.nodes:
        for r in node.reads():
            readers.setdefault(r, set()).add(node.name)
    for s in cell.states:                         # carried to the next step
        readers.setdefault(new_name(s.name), set()).add("<next step>")
    readers.setdefault(cell.output, set()).add("<output>")

    home = kernel_dims(cell)

    def program(nodes: list[Node], kind: str) -> tuple[Stage, ...]:
        depth: dict[str, int] = {}
        for node in nodes:
            inner = [depth.get(r, 0) for r in node.reads()]
            depth[node.name] = (depth.get(node.operand, 0) + 1 if node.is_matmul
                                else max(inner, default=0))
        stages = []
        for k in range(max(depth.values(), default=-1) + 1):
            here = [n for n in nodes if depth[n.name] == k]
            gemms = []
            for op in dict.fromkeys(n.operand for n in here if n.is_matmul):
                members = tuple(n for n in here if n.is_matmul and n.operand == op)
                gemms.append(Gemm(f"mm__{op}", op, members))
            regions = []
            for dim in dict.fromkeys(home[n.name] for n in here if not n.is_matmul):
                members = tuple(n for n in here if not n.is_matmul and home[n.name] == dim)
                names = {n.name for n in members}
                inputs = sorted({r for n in members for r in n.reads()} - names)
                outputs = [n.name for n in members if readers.get(n.name, set()) - names]
                regions.append(Region(f"{kind}{k}_{dim}", dim, members, tuple(inputs),
                                      tuple(outputs)))
            if gemms or regions:
                stages.append(Stage(tuple(gemms), tuple(regions)))
        return tuple(stages)

    static_nodes = [n for n in cell.nodes if n.name in static]
    step_nodes = [n for n in cell.nodes if n.name not in static]
    return Plan(cell, program(static_nodes, "static"), program(step_nodes, "step"),
                frozenset(static - params))


def kernel_dims(cell: Cell) -> dict[str, str]:
    """The dimension of the kernel that computes each elementwise node: its own, or for
    a per-row scalar the dimension its reductions ran over."""
    dim_of = cell.dim_of()
    home = {}
    for node in cell.nodes:
        if node.is_matmul or node.dim != ONE:
            home[node.name] = node.dim
            continue
        reads = [r for r in node.reads() if r in dim_of]
        sources = {dim_of[r] if dim_of[r] != ONE else home.get(r, ONE) for r in reads}
        if len(sources - {ONE}) > 1:
            raise SpecError(f"`{display_name(node.name)}` combines reductions over "
                            f"different dimensions ({', '.join(sorted(sources - {ONE}))})",
                            path=cell.path, line=node.line,
                            fix="combine vectors of one dimension, or project one of them "
                                "first with a weight matrix")
        home[node.name] = min(sources - {ONE}, default=ONE)
    return home
