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
Such a scalar may also feed a kernel of another dimension in the same stage
(`h' = tanh(h @ U) + sum(x * (h @ V))`: a sum over I feeds an H-wide state): the stage's
kernels then run in rounds, a kernel after every kernel whose scalars it reads.
"""
from __future__ import annotations

from .. import naming
from ..errors import SpecError
from ..ir.cell import ONE, Cell, Node
from ..ir.plan import Gemm, Plan, Region, Stage, typecheck_plan


def schedule(cell: Cell) -> Plan:
    params = {p.name for p in cell.params}
    static = {v.name for v in cell.inputs} | params
    per_step = {naming.new(s.name) for s in cell.states} | {cell.output}
    for node in cell.nodes:
        if node.name not in per_step and all(r in static for r in node.reads()):
            static.add(node.name)
    readers: dict[str, set[str]] = {}
    for node in cell.nodes:
        for r in node.reads():
            readers.setdefault(r, set()).add(node.name)
    for s in cell.states:                         # carried to the next step
        readers.setdefault(naming.new(s.name), set()).add("<next step>")
    readers.setdefault(cell.output, set()).add("<output>")
    home = kernel_dims(cell)
    order = cell.order()

    def program(nodes: list[Node], kind: str) -> tuple[Stage, ...]:
        depth: dict[str, int] = {}
        for node in nodes:
            inner = [depth.get(r, 0) for r in node.reads()]
            depth[node.name] = (depth.get(node.operand, 0) + 1 if node.is_matmul
                                else max(inner, default=0))
        stages = []
        for k in range(max(depth.values(), default=-1) + 1):
            here = [n for n in nodes if depth[n.name] == k]
            gemms = [Gemm(op, tuple(n for n in here if n.is_matmul and n.operand == op))
                     for op in dict.fromkeys(n.operand for n in here if n.is_matmul)]
            elementwise = [n for n in here if not n.is_matmul]
            rounds = _rounds(elementwise, home)
            groups = dict.fromkeys((rounds[n.name], home[n.name]) for n in elementwise)
            regions = []
            for idx, (rnd, dim) in enumerate(sorted(groups, key=lambda g: g[0])):
                members = tuple(n for n in elementwise
                                if (rounds[n.name], home[n.name]) == (rnd, dim))
                names = {n.name for n in members}
                inputs = sorted({r for n in members for r in n.reads()} - names, key=order.get)
                outputs = [n.name for n in members if readers.get(n.name, set()) - names]
                regions.append(Region(naming.region(kind, len(stages) + 1, idx), dim, members,
                                      tuple(inputs), tuple(outputs)))
            if gemms or regions:
                stages.append(Stage(tuple(gemms), tuple(regions)))
        return tuple(stages)

    static_nodes = [n for n in cell.nodes if n.name in static]
    step_nodes = [n for n in cell.nodes if n.name not in static]
    return typecheck_plan(Plan(cell, program(static_nodes, "static"),
                               program(step_nodes, "step"), frozenset(static - params)))


def _rounds(nodes: list[Node], home: dict[str, str]) -> dict[str, int]:
    """Within one stage, the round of each elementwise node: a node runs in a later
    round than any node of another kernel dimension whose value it reads."""
    rounds: dict[str, int] = {}
    for node in nodes:                       # topologically ordered
        rounds[node.name] = max((rounds[r] + (home[r] != home[node.name])
                                 for r in node.reads() if r in rounds), default=0)
    return rounds


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
            raise SpecError(f"`{naming.display_spec(node.name)}` combines reductions over "
                            f"different dimensions ({', '.join(sorted(sources - {ONE}))})",
                            path=cell.path, line=node.line,
                            fix="combine vectors of one dimension, or project one of them "
                                "first with a weight matrix")
        home[node.name] = min(sources - {ONE}, default=ONE)
    return home
