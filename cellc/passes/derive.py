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

Reductions: see `ir/derivation.py` for the loops over the units, level by level. Inside
loop p, `d__v` is vector v's incoming adjoint (its seed) if v is of level p, and its
whole adjoint, read from a row of scratch, if v is of a higher level.
"""
from __future__ import annotations

import sympy

from .. import naming
from ..ir.cell import ONE, is_size, symbol
from ..ir.derivation import BackwardLoop, Derivation, RegionGrad
from ..ir.plan import Plan, Region


def derive(plan: Plan) -> Derivation:
    cell = plan.cell
    reuse = {n.expr: symbol(n.name) for n in cell.nodes
             if not n.is_matmul and not n.expr.is_Atom}
    dim_of, order = cell.dim_of(), cell.order()
    constants = frozenset(v.name for v in cell.inputs if not v.grad)
    grads = {}
    saved = {g.operand for _, g in plan.gemms()}
    for _, region in plan.regions():
        grads[region.name] = region_grad(region, reuse, dim_of, order, constants)
        saved.update(grads[region.name].reads)
    return Derivation(plan, grads, frozenset(saved))


def levels(region: Region) -> dict[str, int]:
    """Reductions on the longest path to each node inside the region (inputs: 0)."""
    level: dict[str, int] = {}
    for node in region.nodes:
        inner = [level.get(r, 0) for r in node.reads()]
        level[node.name] = max(inner, default=0) + (1 if node.is_reduction else 0)
    return level


def region_grad(region: Region, reuse: dict, dim_of: dict, order: dict,
                constants: frozenset = frozenset()) -> RegionGrad:
    """The backward loops of one region; `constants` are inputs that get no adjoint."""
    def partial(node, wrt: str):
        return sympy.diff(node.expr, symbol(wrt)).xreplace(reuse)

    def d(name):
        return symbol(naming.adjoint(name))

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
    temporaries = sympy.numbered_symbols(naming.TEMP_PREFIX, real=True)   # one per region
    loops, grads = [], []
    for p in range(max(level.values(), default=0), -1, -1):
        adj: dict[str, sympy.Expr] = {}

        def coefficient(reader):
            """The adjoint that `reader` sends back, as known inside loop p."""
            if level[reader.name] == p and not is_scalar[reader.name]:
                return adj[reader.name]
            return d(reader.name)          # whole adjoint, known by now

        def incoming(name):
            return [coefficient(r) * partial(r, name) for r in readers.get(name, [])]

        vectors = [n for n in at_level.get(p, []) if not is_scalar[n.name]]
        for node in reversed(vectors):
            seed = [d(node.name)] if node.name in region.outputs else []
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
        sums = [(naming.accumulator(naming.adjoint(r)), sympy.Add(*terms))
                for r, terms in shares.items()]
        unit_grads = []
        if p == 0:
            unit_grads = [(u, sympy.Add(*incoming(u))) for u in region.inputs
                          if not is_scalar[u] and u not in constants]
        exprs = [e for _, e in scratch + sums + unit_grads]
        temps, reduced = sympy.cse(exprs, symbols=temporaries, order="canonical")
        k, m = len(scratch), len(scratch) + len(sums)
        scratch = list(zip([n for n, _ in scratch], reduced[:k]))
        sums = list(zip([n for n, _ in sums], reduced[k:m]))
        grads += zip([n for n, _ in unit_grads], reduced[m:])
        # per-row scalars of this level, after the loop, in reverse order
        scalars = []
        last = [n.name for n in at_level.get(p, []) if is_scalar[n.name]]
        if p == 0:
            last = [u for u in region.inputs if is_scalar[u]] + last
        for name in reversed(last):
            terms = [symbol(naming.accumulator(naming.adjoint(name)))] if name in summed else []
            if name in region.outputs:
                terms.append(d(name))
            terms += [d(r.name) * partial(r, name)
                      for r in readers.get(name, []) if is_scalar[r.name]]
            scalars.append((naming.adjoint(name), sympy.Add(*terms)))
        loops.append(BackwardLoop(p, tuple((t.name, e) for t, e in temps), tuple(scratch),
                                  tuple(sums), tuple(scalars)))
    grads += [(u, d(u)) for u in region.inputs if is_scalar[u] and u not in constants]
    grads.sort(key=lambda g: order[g[0]])
    used, local = set(), {naming.adjoint(n) for n in [*level, *region.inputs]}
    for loop in loops:
        local.update(n for n, _ in (*loop.temps, *loop.sums))
        for _, e in (*loop.temps, *loop.scratch, *loop.sums, *loop.scalars):
            used |= e.free_symbols
    used |= set().union(*(e.free_symbols for _, e in grads))
    reads = sorted((s.name for s in used if s.name not in local and not is_size(s.name)),
                   key=order.get)
    return RegionGrad(region, tuple(loops), tuple(grads), tuple(reads),
                      tuple(region.outputs), level)
