"""Fused elementwise kernels as program trees: one per region and direction.

A kernel runs over the rows of one step (or, in the static program, of all steps at
once) and, inside each row, over the units of its dimension: one loop over the units
per level of reduction (see `ir/derivation.py`), per-row scalars between them.

Forward: each equation's lines come together under a comment that quotes it: its loads
(in the spec's order), its value, its store. Backward: the derivation's loops, whose
shared subexpressions `t__k` come first, then the adjoints they give. In both, a
subexpression that depends only on per-row scalars (layer norm's 1/sqrt(var + eps)) is
computed once per row, before the loop over the units that needs it.

Which adjoint a backward kernel assigns and which it adds to is decided before any
kernel is built, from the order backward runs in (`Writes`), so building one kernel
never depends on having built another.
"""
from __future__ import annotations

import itertools
from typing import NamedTuple

import sympy

from .. import naming
from ..ir.cell import ONE, is_size, symbol
from ..ir.derivation import Derivation, RegionGrad
from ..ir.plan import Region
from ..passes.derive import levels
from .storage import B, Place, Storage, size
from .tree import Array, Assign, Comment, Element, Function, Loop, Param, View, walk

ROW = sympy.Symbol(naming.ROW_INDEX, integer=True, nonnegative=True)
UNIT = sympy.Symbol(naming.UNIT, integer=True, nonnegative=True)
ROWS = sympy.Symbol(naming.ROWS, integer=True, nonnegative=True)
D_OUTPUT = naming.D_OUTPUT


class Writes(NamedTuple):
    """Backward's writers of adjoints in the order they run (`order`: writer id and the
    names whose adjoints it writes). A writer assigns what no earlier writer wrote and
    adds to the rest; a kernel's incoming adjoint is whatever earlier writers wrote."""

    order: tuple

    def before(self, writer) -> set:
        """Names some writer before `writer` writes."""
        seen = set()
        for w, names in self.order:
            if w == writer:
                return seen
            seen |= set(names)
        raise KeyError(writer)

    def anywhere(self, kinds=("step",)) -> set:
        """Names any writer of the given programs writes."""
        return {n for w, names in self.order if w[0] in kinds for n in names}


def backward_writes(d: Derivation, storage: Storage) -> Writes:
    """Writers in backward order: the carried new states (and the output's seed when the
    output is a product), then each step stage's kernels (last region first) and
    transposed GEMMs, then the static program's, stage by stage in reverse."""
    cell = d.plan.cell
    order = [(("step", "carried"), tuple(storage.new_states))]
    if cell.output in storage.member:
        order.append((("step", "seed"), (cell.output,)))
    for kind, stages in (("step", d.plan.step), ("static", d.plan.static)):
        for stage in reversed(stages):
            for region in reversed(stage.regions):
                grad = d.grads[region.name]
                names = [u for u, _ in grad.grads if u not in storage.params]
                for u in list(names):        # a product whose adjoint lives in another's
                    g = storage.member[u][0] if u in storage.member else None
                    if g is not None and g.operand in storage.shared:
                        owner = storage.gemm_of(storage.shared[g.operand])
                        names.append(owner.nodes[[n.name for n in g.nodes].index(u)].name)
                order.append(((kind, "kernel", region.name), tuple(dict.fromkeys(names))))
            for g in stage.gemms:
                order.append(((kind, "gemm", g.operand), (g.operand,)))
    return Writes(tuple(order))


# ---- building one kernel -------------------------------------------------------------
class _Kernel:
    """One kernel being built: its array parameters in the order of first use (each
    with the view its caller passes), and fresh names for its temporaries."""

    def __init__(self, name: str, temps: int = 0):
        self.name = name
        self.views: dict[str, View] = {}
        self.written: set[str] = set()
        self.sizes: set[sympy.Symbol] = set()
        self.scratch: list[tuple[str, sympy.Expr]] = []
        self.temps = (sympy.Symbol(naming.temporary(k), real=True) for k in itertools.count(temps))

    def element(self, place: Place, unit, write: bool = False) -> Element:
        """One element of a value: unit `unit` of its block, in row ROW (1-D parameters:
        no row)."""
        known = self.views.setdefault(place.param, place.view)
        assert known == place.view, f"{place.param} names two views"
        if write:
            self.written.add(place.param)
        self.sizes |= place.col.free_symbols
        col = place.col + unit
        if _rank(place.view) == 1:
            return Element.of(place.param, (col,))
        return Element.of(place.param, (ROW, col))

    def row_of(self, name: str, width) -> str:
        """A row of scratch, allocated once per call."""
        if name not in [n for n, _ in self.scratch]:
            self.scratch.append((name, width))
        return name

    def function(self, dim: str, body: list, doc: str, rows) -> tuple[Function, tuple]:
        """The kernel, and the arguments a call passes it (rows first): the sizes of the
        dimensions it loops over, indexes by or computes with (`mean` divides by |D|)."""
        used = {naming.code(naming.parse(s.name).parts[0]) for a in walk(body) if isinstance(a, Assign)
                for s in a.value.free_symbols if is_size(s.name)}
        sizes = sorted({s.name for s in self.sizes | size(dim).free_symbols} | used)
        params = [Param(naming.ROWS, "scalar")] + [Param(s, "size") for s in sizes]
        args = [rows] + [sympy.Symbol(s, integer=True) for s in sizes]
        for name, view in self.views.items():
            group = ("vectors" if _rank(view) == 1
                     else "writes" if name in self.written else "reads")
            params.append(Param(name, group))
            args.append(view)
        order = {"scalar": 0, "size": 1, "vectors": 2, "reads": 3, "writes": 4}
        ranked = sorted(zip(params, args), key=lambda pa: order[pa[0].group])
        dtype_of = next(p.name for p, _ in ranked if p.group not in ("scalar", "size"))
        row_loop = Loop(ROW, ROWS, tuple(body), "rows")
        return (Function(self.name, "kernel", tuple(p for p, _ in ranked), (row_loop,),
                         doc=doc, scratch=tuple(self.scratch), dtype_of=dtype_of),
                tuple(ranked))


def _rank(view: View) -> int:
    """How many axes a view has (a kernel's 1-D parameters and 2-D blocks)."""
    return len(view.array.shape) - (view.step is not None) - view.flat


class _Scope:
    """The lines of one scope of a kernel: a loop over the units, or the row around them.
    A value is computed once per scope: `temp` names a subexpression the first time and
    reuses the name after, and the base of a power (`sqrt(v + eps)**3`) gets a name of its
    own before the line that needs it."""

    def __init__(self, fresh):
        self.fresh = fresh
        self.known: dict = {}
        self.lines: list = []

    def temp(self, expr) -> sympy.Symbol:
        if expr not in self.known:
            shared = self.share(expr.xreplace(self.known))
            self.known[expr] = name = next(self.fresh)
            self.lines.append(Assign(name, shared))
        return self.known[expr]

    def share(self, expr):
        """`expr` with each power's non-atomic base computed once in this scope."""
        if expr.is_Atom or isinstance(expr, Element):
            return expr
        args = [self.share(a) for a in expr.args]
        if expr.is_Pow and not expr.base.is_Atom and _repeats(expr.exp):
            return sympy.Pow(self.temp(args[0]), expr.exp)
        return expr.func(*args) if args != list(expr.args) else expr

    def assign(self, target, expr, accumulate: bool = False) -> None:
        self.lines.append(Assign(target, self.share(expr.xreplace(self.known)), accumulate))

    def define(self, name: sympy.Symbol, expr) -> sympy.Symbol:
        """`name = expr` in this scope, unless the scope has computed `expr` already:
        then the name that holds it (which the caller uses instead of `name`)."""
        if expr not in self.known:
            self.assign(name, expr)
            self.known[expr] = name
        return self.known[expr]

    def hoist(self, expr, invariant: set):
        """`expr` with each largest subexpression that depends only on `invariant`
        symbols (per-row values) computed once, in this (the row's) scope, before the
        loop that needs it; constants and single operations stay in place."""
        if expr.is_Atom or not expr.free_symbols:
            return expr

        def worth(sub):
            return sub.free_symbols <= invariant and (sub.has(sympy.Function, sympy.Pow)
                                                      or sympy.count_ops(sub) > 1)

        if worth(expr):
            return self.temp(expr)
        if isinstance(expr, (sympy.Add, sympy.Mul)):
            fixed = [a for a in expr.args if a.free_symbols and a.free_symbols <= invariant]
            rest = [a for a in expr.args if a not in fixed]
            if len(fixed) > 1 and worth(expr.func(*fixed)):
                return expr.func(self.temp(expr.func(*fixed)),
                                 *(self.hoist(a, invariant) for a in rest))
        return expr.func(*(self.hoist(a, invariant) for a in expr.args))


def _repeats(exponent) -> bool:
    """Whether the printer writes a power's base more than once: x**2, x**-3, x**(3/2)."""
    return exponent.is_Rational and exponent.q in (1, 2) and abs(exponent.p) >= 2


def _comment(text: str | None, name: str) -> Comment:
    return Comment(text if text else f"{naming.display_spec(name)}")


# ---- forward -------------------------------------------------------------------------
def forward_kernel(region: Region, program: str, storage: Storage,
                   direction: str = naming.FORWARD) -> tuple[Function, tuple]:
    """The forward kernel of `region` (see the module docstring), and its call's
    arguments; `direction` names it (naming.FORWARD, or naming.INFER for the forward
    that saves nothing)."""
    k = _Kernel(naming.kernel(direction, region.name))
    order = storage.cell.order()
    level = levels(region)
    scalar = {n for n in [*region.inputs, *level] if storage.dim.get(n) == ONE}
    kept = {r for n in region.nodes if n.name not in scalar for r in n.reads()
            if r in level and level[r] < level[n.name]}
    stored = set(storage.stored) | set(storage.new_states)
    invariant = {symbol(n) for n in scalar} | {s for n in region.nodes if not n.is_matmul
                                               for s in n.expr.free_symbols if is_size(s.name)}
    row = _Scope(k.temps)
    for u in region.inputs:
        if u in scalar:
            row.assign(symbol(u), k.element(storage.value(u, program), 0))

    def store(scope, name, unit):
        if name in stored:
            scope.assign(k.element(storage.value(name, program), unit, write=True), symbol(name))

    for p in range(max(level.values(), default=0) + 1):
        here = [n for n in region.nodes if level[n.name] == p]
        sums = [n for n in region.nodes if n.is_reduction and level[n.name] == p + 1]
        for n in here:
            if n.name in scalar:
                row.lines.append(_comment(n.text, n.name))
                row.assign(symbol(n.name), symbol(naming.accumulator(n.name)) if n.is_reduction
                           else n.expr)
                store(row, n.name, 0)
        for n in sums:
            row.assign(symbol(naming.accumulator(n.name)), sympy.S.Zero)
        unit, loaded, said = _Scope(k.temps), set(), None

        def load(u):
            if u in loaded or u in scalar:
                return
            loaded.add(u)
            if u in level:          # a vector of a lower level, kept in a row of scratch
                scratch = k.row_of(naming.scratch_row(u), size(region.dim))
                unit.assign(symbol(u), Element.of(scratch, (UNIT,)))
            else:
                unit.assign(symbol(u), k.element(storage.value(u, program), UNIT))

        for n in here:
            if n.name in scalar:
                continue
            if n.text != said:
                unit.lines.append(_comment(n.text, n.name))
                said = n.text
            for u in sorted(n.reads(), key=order.get):
                load(u)
            loaded.add(n.name)
            unit.assign(symbol(n.name), row.hoist(n.expr, invariant))
            store(unit, n.name, UNIT)
            if n.name in kept:
                scratch = k.row_of(naming.scratch_row(n.name), size(region.dim))
                unit.assign(Element.of(scratch, (UNIT,)), symbol(n.name))
        for n in sums:
            load(n.reads()[0])
            unit.assign(symbol(naming.accumulator(n.name)), symbol(n.reads()[0]), accumulate=True)
        if unit.lines:
            row.lines.append(Loop(UNIT, size(region.dim), tuple(unit.lines), "units"))
        invariant |= {symbol(n.name) for n in here if n.name in scalar}
    doc = f"Forward of {', '.join(naming.display_spec(n.name) for n in region.nodes)}."
    return k.function(region.dim, row.lines, doc, storage.rows(program))


# ---- backward ------------------------------------------------------------------------
def backward_kernel(grad: RegionGrad, program: str, storage: Storage,
                    writes: Writes) -> tuple[Function, tuple]:
    """The backward kernel of a region: the derivation's loops, levels P..0, with the
    region inputs' adjoints stored (or added) in the last, and the call's arguments."""
    region = grad.region
    written = writes.before((program, "kernel", region.name))
    cell = storage.cell
    used_temps = [int(naming.parse(t).parts[0]) for loop in grad.loops for t, _ in loop.temps]
    k = _Kernel(naming.kernel(naming.BACKWARD, region.name), max(used_temps, default=-1) + 1)
    scalar = {n for n in [*grad.reads, *region.inputs, *grad.levels]
              if storage.dim.get(n) == ONE}
    vectors = [n for n in grad.levels if n not in scalar]
    exprs = [e for loop in grad.loops for _, e in (*loop.temps, *loop.scratch, *loop.sums)]
    invariant = ({symbol(n) for n in scalar} | {symbol(naming.adjoint(n)) for n in scalar}
                 | {s for e in exprs + [e for _, e in grad.grads] for s in e.free_symbols
                    if is_size(s.name)})

    def seed(scope, name, unit):
        """The adjoint of a live-out value as it comes in: what earlier writers stored,
        and the output's upstream gradient, folded in."""
        parts = []
        if name in written:
            parts.append(k.element(storage.adjoint(name, program), unit))
        if name == cell.output and program == "step":
            parts.append(k.element(Place(View(_d_output_array(storage)), sympy.S.Zero,
                                         D_OUTPUT), unit))
        scope.assign(symbol(naming.adjoint(name)), sympy.Add(*parts))

    def scratch_of(name):
        return k.row_of(naming.scratch_row(naming.adjoint(name)), size(region.dim))

    row = _Scope(k.temps)
    same: dict = {}      # a derivation temporary -> the row's name for the same value
    for n in grad.reads:
        if n in scalar:
            row.assign(symbol(n), k.element(storage.value(n, program), 0))
    for n in grad.seeds:
        if n in scalar:
            seed(row, n, 0)
    for n in dict.fromkeys(n for loop in grad.loops for n, _ in loop.sums):
        row.assign(symbol(n), sympy.S.Zero)
    blocks = []                          # (row of scratch, element, accumulate)
    for loop in grad.loops:
        exprs = [e for _, e in (*loop.temps, *loop.scratch, *loop.sums)]
        if loop.level == 0:
            exprs += [e for u, e in grad.grads if u not in scalar]
        used = {s.name for e in exprs for s in e.free_symbols}
        unit = _Scope(k.temps)
        for n in grad.reads:
            if n not in scalar and n in used:
                unit.assign(symbol(n), k.element(storage.value(n, program), UNIT))
        for n in grad.seeds:
            if n not in scalar and grad.levels[n] == loop.level and naming.adjoint(n) in used:
                seed(unit, n, UNIT)
        for n in vectors:
            if grad.levels[n] > loop.level and naming.adjoint(n) in used:
                unit.assign(symbol(naming.adjoint(n)), Element.of(scratch_of(n), (UNIT,)))
        for t, e in loop.temps:
            e = e.xreplace(same)
            if e.free_symbols <= invariant:      # the same for every unit: once per row
                same[symbol(t)] = row.define(symbol(t), e)
                invariant.add(same[symbol(t)])
            else:
                unit.assign(symbol(t), row.hoist(e, invariant))
        for n, e in loop.scratch:
            unit.assign(Element.of(scratch_of(n), (UNIT,)), row.hoist(e.xreplace(same), invariant))
        for n, e in loop.sums:
            unit.assign(symbol(n), row.hoist(e.xreplace(same), invariant), accumulate=True)
        after = _Scope(k.temps)
        if loop.level == 0:
            for name, expr in grad.grads:
                expr = expr.xreplace(same)
                _input_grad(after if name in scalar else unit, k, program, grad, name,
                            expr if name in scalar else row.hoist(expr, invariant), storage,
                            written, blocks, name in scalar)
        if unit.lines:
            row.lines.append(Loop(UNIT, size(region.dim), tuple(unit.lines), "units"))
        for n, e in loop.scalars:
            row.assign(symbol(n), e.xreplace(same))
        for line in after.lines:             # the per-row scalars' adjoints
            if isinstance(line, Assign):
                row.assign(line.target, line.value, line.accumulate)
            else:
                row.lines.append(line)
        invariant |= {symbol(n) for n, _ in loop.scalars}
    for scratch, target, accumulate in blocks:
        row.lines.append(Loop(UNIT, size(region.dim), (Assign(target, Element.of(scratch, (UNIT,)),
                                                              accumulate),), "units"))
    doc = f"Backward of {', '.join(naming.display_spec(n.name) for n in region.nodes)}."
    return k.function(region.dim, row.lines, doc, storage.rows(program))


def _d_output_array(storage: Storage) -> Array:
    """The output's upstream gradient at step t, a [B, width] view the time loop binds."""
    return Array(D_OUTPUT, (B, size(storage.dim[storage.cell.output])))


def _input_grad(scope: _Scope, k: _Kernel, program: str, grad: RegionGrad, name: str, expr,
                storage: Storage, written: set, blocks: list, is_scalar: bool) -> None:
    """Store (or add) the adjoint of one region input, under a comment that says which
    equations of the region it comes back through."""
    unit = 0 if is_scalar else UNIT
    if name in storage.params and storage.param_terms(grad, name) is not None:
        return                           # summed from another buffer after the loop
    if name in storage.member and storage.member[name][0].operand in storage.shared:
        return                           # the same value is stored for the owning GEMM
    readers = dict.fromkeys(n.text or naming.display_spec(n.name) for n in grad.region.nodes
                            if name in n.reads())
    scope.lines.append(Comment(f"d({_as_written(name, storage)}) through: "
                               + "; ".join(readers)))
    if name in storage.params:
        place = storage.terms(name, grad.region.name, program)
        scope.assign(k.element(place, unit, write=True), expr)
        return
    target = k.element(storage.adjoint(name, program), unit, write=True)
    accumulate = name in written
    if name in storage.member and len(storage.member[name][0].nodes) > 1 and not is_scalar:
        # A store into one column block of a fused buffer goes through a row of scratch,
        # copied after the row: LLVM does not vectorize a loop that stores into several
        # blocks of one array at a run-time offset (LSTM backward kernel: 4.5 ns per
        # element, 0.71 through scratch).
        scratch = k.row_of(naming.block(len(blocks)), size(storage.dim[name]))
        blocks.append((scratch, target, accumulate))
        scope.assign(Element.of(scratch, (UNIT,)), expr)
    else:
        scope.assign(target, expr, accumulate)


def _as_written(name: str, storage: Storage) -> str:
    """A value as a spec writes it: `h'`, a product `x @ W_xi`, a lifted operand by its
    product (`in[W_ss]`)."""
    if name in storage.member:
        node = storage.member[name][0].nodes[[n.name for n in storage.member[name][0].nodes]
                                             .index(name)]
        return f"{_as_written(node.operand, storage)} @ {node.weight}"
    parsed = naming.parse(name)
    if parsed and parsed.kind == naming.IN:
        return f"in[{parsed.parts[0]}]"
    return naming.display_spec(name)
