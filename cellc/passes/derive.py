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

Reductions. A region may hold per-row scalars (dimension ONE): reductions `s =
RowSum(v)` and values computed from them. A node's *level* is the number of
reductions on its longest path inside the region; forward runs one loop over the
units per level (`mean` needs the whole vector before the centred vector exists).
Backward runs the loops in reverse, level P down to 0. Loop p computes the adjoints
of the vectors of level p, adds up (over units) what they send to the scalars they
read (`sum__s`), and keeps in a row of scratch the adjoints that lower levels read
(`scratch`). After loop p the scalars of level p get their whole adjoints `d__s`; the
adjoint of a reduction `s = RowSum(v)` then reaches every unit of `v`. Inside loop p,
`d__v` is vector v's incoming adjoint (seed) if v is of level p, and its whole
adjoint, read from scratch, if v is of a higher level.
"""
from __future__ import annotations

from typing import NamedTuple

import sympy

from ..ir.cell import ONE, is_size, symbol
from .schedule import Plan, Region


def adjoint(name: str) -> str:
    """Name of the adjoint (gradient) of value `name`."""
    return "d__" + name


def accumulator(name: str) -> str:
    """The running sum, over units, of what the vectors send to a per-row scalar
    (`sum` is a reserved word, so no value of the spec starts with `sum__`)."""
    return "sum__" + name


class Loop(NamedTuple):
    """One backward loop over the units of a row (one level), then per-row scalars."""

    level: int
    temps: tuple[tuple[str, sympy.Expr], ...]    # CSE temporaries, per unit
    scratch: tuple[tuple[str, sympy.Expr], ...]  # (vector v, its whole adjoint d__v)
    sums: tuple[tuple[str, sympy.Expr], ...]     # sum__s += ..., over the units
    scalars: tuple[tuple[str, sympy.Expr], ...]  # d__s = ..., per row after the loop


class RegionGrad(NamedTuple):
    region: Region
    loops: tuple[Loop, ...]                      # levels P..0; the last also stores grads
    grads: tuple[tuple[str, sympy.Expr], ...]   # (region input, its adjoint)
    reads: tuple[str, ...]                       # forward values the expressions read
    seeds: tuple[str, ...]                       # live-out nodes whose adjoint comes in
    levels: dict                                 # node name -> level (inputs: 0)

    @property
    def temps(self):
        return self.loops[-1].temps


class Derivation(NamedTuple):
    plan: Plan
    static: dict[str, RegionGrad]   # region name -> gradient
    step: dict[str, RegionGrad]
    saved: frozenset                # forward values the backward pass reads


def derive(plan: Plan) -> Derivation:
    cell = plan.cell
    reuse = {n.expr: symbol(n.name) for n in cell.nodes
             if not n.is_matmul and not n.expr.is_Atom}
    dim_of = cell.dim_of()
    constants = frozenset(v.name for v in cell.inputs if not v.grad)
    grads = {}
    saved = set()
    for program in (plan.static, plan.step):
        for stage in program:
            for gemm in stage.gemms:
                saved.add(gemm.operand)
            for region in stage.regions:
                grads[region.name] = region_grad(region, reuse, dim_of, constants)
                saved.update(grads[region.name].reads)
    static = {r.name: grads[r.name] for st in plan.static for r in st.regions}
    step = {r.name: grads[r.name] for st in plan.step for r in st.regions}
    return Derivation(plan, static, step, frozenset(saved))


def levels(region: Region) -> dict[str, int]:
    """Reductions on the longest path to each node inside the region (inputs: 0)."""
    level: dict[str, int] = {}
    for node in region.nodes:
        inner = [level.get(r, 0) for r in node.reads()]
        level[node.name] = max(inner, default=0) + (1 if node.is_reduction else 0)
    return level


def region_grad(region: Region, reuse: dict, dim_of: dict,
                constants: frozenset = frozenset()) -> RegionGrad:
    """The backward loops of one region; `constants` are inputs that get no adjoint."""
    def partial(node, wrt: str):
        return sympy.diff(node.expr, symbol(wrt)).xreplace(reuse)

    level = levels(region)
    is_scalar = {n: dim_of[n] == ONE for n in [*region.inputs, *level]}
    readers: dict[str, list] = {}
    for node in region.nodes:
        for r in node.reads():
            readers.setdefault(r, []).append(node)
    at_level: dict[int, list] = {}
    for node in region.nodes:
        at_level.setdefault(level[node.name], []).append(node)
    # the scalars some vector reads: their adjoints include a sum over the units
    summed = {r for n in region.nodes if not is_scalar[n.name]
              for r in n.reads() if is_scalar.get(r, False)}
    loops = []
    for p in range(max(level.values(), default=0), -1, -1):
        adj: dict[str, sympy.Expr] = {}

        def coefficient(reader):
            """The adjoint that `reader` sends back, as known inside loop p."""
            if level[reader.name] == p and not is_scalar[reader.name]:
                return adj[reader.name]
            return symbol(adjoint(reader.name))      # whole adjoint, known by now

        def incoming(name):
            return [coefficient(r) * partial(r, name) for r in readers.get(name, [])]

        vectors = [n for n in at_level.get(p, []) if not is_scalar[n.name]]
        for node in reversed(vectors):
            seed = [symbol(adjoint(node.name))] if node.name in region.outputs else []
            adj[node.name] = sympy.Add(*seed, *incoming(node.name))
        scratch = [(n.name, adj[n.name]) for n in vectors
                   if any(level.get(r, 0) < p and not is_scalar.get(r, False)
                          for r in n.reads())]
        # scalars read by this loop's vectors: their share, summed over the units
        shares: dict[str, list] = {}
        for n in vectors:
            for r in n.reads():
                if is_scalar.get(r, False):
                    shares.setdefault(r, []).append(adj[n.name] * partial(n, r))
        sums = [(accumulator(r), sympy.Add(*terms)) for r, terms in shares.items()]
        grads = []
        if p == 0:
            grads = [(u, sympy.Add(*incoming(u))) for u in region.inputs
                     if not is_scalar[u] and u not in constants]
        exprs = [e for _, e in scratch + sums + grads]
        temps, reduced = sympy.cse(exprs, symbols=sympy.numbered_symbols("t__", real=True),
                                   order="canonical")
        k = len(scratch)
        scratch = list(zip([n for n, _ in scratch], reduced[:k]))
        sums = list(zip([n for n, _ in sums], reduced[k:k + len(sums)]))
        grads = list(zip([n for n, _ in grads], reduced[k + len(sums):]))
        # per-row scalars of this level, after the loop, in reverse order
        scalars = []
        last = [n.name for n in at_level.get(p, []) if is_scalar[n.name]]
        if p == 0:
            last = [u for u in region.inputs if is_scalar[u]] + last
        for name in reversed(last):
            terms = [symbol(accumulator(name))] if name in summed else []
            if name in region.outputs:
                terms.append(symbol(adjoint(name)))
            terms += [symbol(adjoint(r.name)) * partial(r, name)
                      for r in readers.get(name, []) if is_scalar[r.name]]
            scalars.append((adjoint(name), sympy.Add(*terms)))
        if p == 0:
            grads += [(u, symbol(adjoint(u))) for u in region.inputs if is_scalar[u]]
        loops.append(Loop(p, tuple((t.name, e) for t, e in temps), tuple(scratch),
                          tuple(sums), tuple(scalars)))
    order = {u: i for i, u in enumerate(region.inputs)}
    grads.sort(key=lambda g: order[g[0]])
    used, local = set(), {adjoint(n) for n in [*level, *region.inputs]}
    for loop in loops:
        local.update(n for n, _ in (*loop.temps, *loop.sums))
        for _, e in (*loop.temps, *loop.scratch, *loop.sums, *loop.scalars):
            used |= e.free_symbols
    used |= set().union(*(e.free_symbols for _, e in grads))
    reads = sorted(s.name for s in used if s.name not in local and not is_size(s.name))
    return RegionGrad(region, tuple(loops), tuple(grads), tuple(reads),
                      tuple(n for n in region.outputs), level)
