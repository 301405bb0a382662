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
from ..errors import SpecError
from ..ir.cell import CONSTANTS_RULE, ONE, is_size, representable, symbol
from ..ir.derivation import BackwardLoop, Derivation, RegionGrad
from ..ir.plan import Plan, Region

INLINE_OPS = 32     # see `bind`


def derive(plan: Plan) -> Derivation:
    cell = plan.cell
    reuse = {n.expr: symbol(n.name) for n in cell.nodes
             if not n.is_matmul and not n.expr.is_Atom}
    dim_of, order = cell.dim_of(), cell.order()
    constants = frozenset(v.name for v in cell.inputs if not v.grad)
    grads = {}
    saved = {g.operand for _, g in plan.gemms()}
    for _, region in plan.regions():
        grads[region.name] = region_grad(region, reuse, dim_of, order, constants, cell.path)
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
                constants: frozenset = frozenset(), path: str = "<spec>") -> RegionGrad:
    """The backward loops of one region; `constants` are inputs that get no adjoint."""
    def partial(node, wrt: str):
        expr = sympy.diff(node.expr, symbol(wrt)).xreplace(reuse)
        bad = sorted(str(n) for n in expr.atoms(sympy.Number) if not representable(n))
        if bad or expr.has(sympy.nan, sympy.zoo, sympy.oo, sympy.I):
            raise SpecError(f"the derivative of `{naming.display_spec(node.name)}` in "
                            f"`{naming.display_spec(wrt)}` has the constant "
                            f"{(bad or ['nan'])[0][:24]}, out of range", path=path,
                            line=node.line, fix=CONSTANTS_RULE)
        return expr

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
        bound: dict = {}        # a temporary -> the adjoint it holds
        for node in reversed(vectors):
            seed = [d(node.name)] if node.name in region.outputs else []
            adj[node.name] = sympy.Add(*seed, *incoming(node.name))
            if not adj[node.name].is_Atom:      # see `bind`
                held = symbol(naming.held_adjoint(len(bound)))
                bound[held], adj[node.name] = adj[node.name], held
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
        bound, exprs = bind(bound, [e for _, e in scratch + sums + unit_grads])
        temps, reduced = sympy.cse([*bound.values(), *exprs], symbols=temporaries,
                                   order="canonical")
        temps = in_order([*temps, *zip(bound, reduced[:len(bound)])])
        reduced = reduced[len(bound):]
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
    loops, grads = renumber(loops, grads)
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


def bind(bound: dict, exprs: list) -> tuple[dict, list]:
    """Each vector's adjoint is built as a temporary (`bound`), so that an adjoint read
    by several others is one symbol in each, not a copy of its whole expression: with
    copies, a chain of values that each read the two before it gives expressions
    exponential in the chain's length, which SymPy's CSE walks as trees. A temporary read
    only once, or one of at most INLINE_OPS operations, is put back in its place here
    (copies of small expressions cannot compound); CSE finds the rest."""
    uses: dict = {t: 0 for t in bound}
    for e in [*bound.values(), *exprs]:
        for s in e.free_symbols & uses.keys():
            uses[s] += e.count(s)           # twice in one expression is two copies
    once = {}
    for t in bound:       # readers were bound first: a chain inlines in one pass
        expr = bound[t].xreplace(once)
        if uses[t] <= 1 or sympy.count_ops(expr) <= INLINE_OPS:
            once[t] = expr
    kept = {t: e.xreplace(once) for t, e in bound.items() if t not in once}
    return kept, [e.xreplace(once) for e in exprs]


def in_order(assignments: list) -> list:
    """`assignments` with each after the ones it reads (first come first otherwise):
    CSE's temporaries may read a bound adjoint, and a bound adjoint CSE's temporaries."""
    local = {t for t, _ in assignments}
    done, order, pending = set(), [], list(assignments)
    while pending:
        for i, (t, e) in enumerate(pending):
            if not (e.free_symbols & local) - done:
                order.append(pending.pop(i))
                done.add(t)
                break
        else:
            raise AssertionError("cyclic temporaries")  # cannot happen: see bind
    return order


def renumber(loops: list, grads: list) -> tuple[list, list]:
    """Temporaries numbered 0, 1, 2, ... in the order the kernel computes them (`bind`
    drops some numbers), so that generated code reads in sequence."""
    old = [t for loop in loops for t, _ in loop.temps]
    new = {symbol(t): symbol(naming.temporary(k)) for k, t in enumerate(old)}

    def rename(pairs):
        return tuple((new[symbol(n)].name if n in old else n, e.xreplace(new))
                     for n, e in pairs)

    loops = [BackwardLoop(loop.level, rename(loop.temps), rename(loop.scratch),
                          rename(loop.sums), rename(loop.scalars)) for loop in loops]
    return loops, list(rename(grads))
