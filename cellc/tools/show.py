"""`cellc show`: what the compiler made of a spec, for a reader.

One report, built from the same IR and derivation the code generator uses:
  - the forward equations, as written (Unicode or LaTeX);
  - the backward equations the compiler derived, after CSE, kernel by kernel;
  - the parameters, with shapes and counts for given sizes;
  - the fusion plan: the GEMMs (which weights fuse), the elementwise kernels (which values
    each computes, with how many unit loops when it reduces), and what forward saves;
  - an estimate of FLOPs and bytes moved per time step, from the IR.
"""
from __future__ import annotations

from typing import NamedTuple

import sympy

from .. import naming
from ..backend.storage import Storage
from ..driver import IRs, compile_bytes
from ..errors import read_spec_bytes
from ..ir import weights
from ..ir.cell import ONE, Cell, symbol
from ..ir.derivation import Derivation
from ..runtime.regularizers import Regularizers
from . import mathtext


class Report(NamedTuple):
    spec: Cell            # as written, with the regularizers' masks (before split)
    compiled: IRs
    sizes: dict[str, int]
    batch: int
    itemsize: int


def report(path, sizes: dict[str, int] | None = None, batch: int = 64,
           itemsize: int = 4, regularizers: Regularizers = Regularizers()) -> Report:
    """What the compiler made of the spec at `path` (or of its variant with
    `regularizers`), with tables for the given sizes."""
    raw = read_spec_bytes(path)
    compiled = compile_bytes(raw, str(path), regularizers)
    spec = compiled.variant
    bound = {d: (sizes or {}).get(d, 64) for d in compiled.cell.dims}
    bound[ONE] = 1
    return Report(spec, compiled, bound, batch, itemsize)


def _size(dims, sizes) -> int:
    n = 1
    for d in dims:
        n *= sizes[d]
    return n


# ---- sections ---------------------------------------------------------------------
def forward_equations(r: Report, tex=False) -> list[str]:
    return [mathtext.equation(n.name, n.expr, tex=tex) for n in r.spec.nodes]


def named_values(r: Report, tex=False) -> list[str]:
    """The values the passes named: lifted GEMM operands and reductions."""
    written = {n.name for n in r.spec.nodes}
    out = []
    for n in r.compiled.cell.nodes:
        if n.name not in written and not n.is_matmul:    # x·W is plain enough
            out.append(mathtext.equation(n.name, n.expr, tex=tex))
    return out


def _width(nodes) -> str:
    counts = {}
    for n in nodes:
        counts[n.dim] = counts.get(n.dim, 0) + 1
    return " + ".join(f"{k if k > 1 else ''}{d}" for d, k in counts.items())


def backward_equations(r: Report, tex=False) -> list[tuple[str, list[str]]]:
    """(kernel title, equations) for every elementwise kernel, in backward order."""
    d = r.compiled.derivation
    out = []
    for kind, title in (("step", "each step, backward"), ("static", "after the time loop")):
        for name, g in reversed([(r.name, d.grads[r.name]) for k, r in d.plan.regions()
                                 if k == kind]):
            lines = []
            for loop in g.loops:
                if len(g.loops) > 1:
                    lines.append(f"-- unit loop, level {loop.level}")
                lines += [mathtext.equation(t, e, tex=tex) for t, e in loop.temps]
                lines += [mathtext.equation(naming.adjoint(v), e, tex=tex) for v, e in loop.scratch
                          if e != symbol(naming.adjoint(v))]      # not a seed
                lines += [mathtext.equation(s, e, tex=tex).replace(" = ", " += ", 1)
                          for s, e in loop.sums]
                if loop.level == 0:
                    lines += [mathtext.equation(naming.adjoint(u), e, tex=tex) for u, e in g.grads
                              if e != symbol(naming.adjoint(u))]
                lines += [mathtext.equation(s, e, tex=tex) for s, e in loop.scalars]
            out.append((f"kernel {name} ({title})", lines))
    return out


def parameter_rows(r: Report) -> list[tuple[str, str, str, int]]:
    """(name, shape in dimensions, shape in numbers, count) per parameter."""
    rows = []
    for p in r.compiled.cell.params:
        if p.derived is not None:                   # computed from the others
            continue
        if p.shape == (ONE,):                       # shape [] in the spec, 0-d to the user
            rows.append((p.name, "scalar", "", 1))
            continue
        rows.append((p.name, " × ".join(p.shape), " × ".join(str(r.sizes[d]) for d in p.shape),
                     _size(p.shape, r.sizes)))
    return rows


def fusion_plan(r: Report) -> list[str]:
    d: Derivation = r.compiled.derivation
    lines = []
    for title, program in (("before the time loop, over all T·B rows at once", d.plan.static),
                           ("each time step", d.plan.step)):
        lines.append(title + ":")
        if not program:
            lines.append("  (nothing)")
        for stage in program:
            for g in stage.gemms:
                weights = " | ".join(n.weight for n in g.nodes)
                width = _width(g.nodes)
                lines.append(f"  GEMM    {mathtext.unicode_name(g.operand)} @ [{weights}]   "
                             f"({d.plan.cell.dim_of()[g.operand]} × {width})")
            for region in stage.regions:
                grad = d.grads[region.name]
                loops = max(grad.levels.values(), default=0) + 1
                values = ", ".join(mathtext.unicode_name(n.name) for n in region.nodes)
                extra = f", {loops} unit loops (reductions)" if loops > 1 else ""
                lines.append(f"  kernel  {region.name} over {region.dim}{extra}: {values}")
    saved = sorted(mathtext.unicode_name(n) for n in d.saved)
    lines.append("saved for backward: " + ", ".join(saved))
    return lines


def _ops(expr: sympy.Expr) -> int:
    return int(sympy.count_ops(expr))


def cost(r: Report) -> dict[str, float]:
    """FLOPs and bytes per time step for a batch of `r.batch` rows: an estimate from
    the IR (elementwise: operations in the printed expressions; memory: each kernel's
    loads and stores, each GEMM's operand, weights and result)."""
    d, B, w, sizes = r.compiled.derivation, r.batch, r.itemsize, r.sizes
    cell = d.plan.cell
    dim = cell.dim_of()
    L = Storage(d)
    out = {"forward GEMM FLOPs": 0, "forward elementwise FLOPs": 0, "forward bytes": 0,
           "backward GEMM FLOPs": 0, "backward elementwise FLOPs": 0, "backward bytes": 0}
    for program in (d.plan.static, d.plan.step):
        for stage in program:
            for g in stage.gemms:
                k = sizes[dim[g.operand]]
                n = sum(sizes[x.dim] for x in g.nodes)
                out["forward GEMM FLOPs"] += 2 * B * k * n
                out["forward bytes"] += w * (B * k + k * n + B * n)
                out["backward GEMM FLOPs"] += 4 * B * k * n     # d(operand) and d(weights)
                out["backward bytes"] += w * (2 * B * n + 2 * k * n + 2 * B * k)
            for region in stage.regions:
                units = B * sizes[region.dim]
                for node in region.nodes:
                    per = B if node.dim == ONE else units
                    out["forward elementwise FLOPs"] += per * max(_ops(node.expr), 1)
                stored = [n.name for n in region.nodes if n.name in L.stored
                          or n.name in L.new_states]
                moved = [u for u in region.inputs if u not in L.params] + stored
                out["forward bytes"] += w * sum(B * sizes[dim[v]] for v in moved)
                grad = d.grads[region.name]
                for loop in grad.loops:
                    for _, e in (*loop.temps, *loop.scratch, *loop.sums):
                        out["backward elementwise FLOPs"] += units * max(_ops(e), 1)
                for _, e in grad.grads:
                    out["backward elementwise FLOPs"] += units * max(_ops(e), 1)
                moved = [v for v in (*grad.reads, *grad.seeds, *(u for u, _ in grad.grads))
                         if v not in L.params]
                out["backward bytes"] += w * sum(B * sizes[dim[v]] for v in moved)
    return out


# ---- the whole report --------------------------------------------------------------
def render(r: Report, tex=False) -> str:
    cell = r.compiled.cell
    bar = "─" * 72
    lines = [f"{cell.name}: {cell.summary}".rstrip(": ")]
    if cell.reference:
        lines.append(f"reference: {cell.reference}")
    states = ", ".join(f"{s.name}[{s.dim}]" for s in cell.states)
    s0 = cell.states[0].name
    inputs = ", ".join(f"{v.name}[{v.dim}]" for v in cell.inputs)
    lines += [f"inputs {inputs}; states {states}; output {naming.display_spec(cell.output)}"]
    if cell.constants:          # folded into the equations below
        lines.append("constants " + ", ".join(f"{n} = {mathtext.number(v)}"
                                              for n, v in cell.constants))
    lines += ["",
              bar, f"Forward, one step ({s0} is the previous state, {s0}′ the new one)", bar]
    lines += ["  " + e for e in forward_equations(r, tex)]
    named = named_values(r, tex)
    if named:
        lines += ["  where the compiler named:"] + ["    " + e for e in named]
    derived = [p for p in cell.params if p.derived is not None]
    if derived:
        lines += ["  weight expressions, computed once per call before the time loop:"]
        lines += [f"    {naming.display(p.name)} = {weights.text(p.derived)}   "
                  f"({' × '.join(p.shape)})" for p in derived]
    lines += ["", bar, "Backward, as derived (∂v is the gradient of the loss in v; "
              "tₖ are shared subexpressions)", bar]
    for title, eqs in backward_equations(r, tex):
        lines.append(f"  {title}")
        lines += ["    " + e for e in eqs]
    if derived:
        lines.append("  after the loop, each weight expression's gradient to its parameters")
        for p in derived:
            grad = weights.Ref(naming.display(naming.adjoint(p.name)))
            for source, share in weights.pullback(p.derived, grad):
                lines.append(f"    ∂{source} += {weights.text(share)}")
    sizes = ", ".join(f"{d}={r.sizes[d]}" for d in cell.dims)
    lines += ["", bar, f"Parameters ({sizes})", bar]
    rows = parameter_rows(r)
    width = max(len(n) for n, *_ in rows)
    shape_w = max(len(s) for _, s, *_ in rows)
    num_w = max(len(s) for _, _, s, _ in rows)
    for name, shape, numbers, count in rows:
        lines.append(f"  {name:<{width}}  {shape:<{shape_w}}  {numbers:<{num_w}}  {count:>12,}")
    lines.append(f"  {'total':<{width}}  {'':<{shape_w}}  {'':<{num_w}}  "
                 f"{sum(c for *_, c in rows):>12,}")
    lines += ["", bar, "Fusion plan", bar]
    lines += ["  " + line for line in fusion_plan(r)]
    c = cost(r)
    lines += ["", bar, f"Per time step, batch {r.batch}, {8 * r.itemsize}-bit floats "
              "(estimated from the IR)", bar]
    for phase in ("forward", "backward"):
        flops = c[f"{phase} GEMM FLOPs"] + c[f"{phase} elementwise FLOPs"]
        lines.append(f"  {phase:<8}  {flops / 1e6:9.3f} MFLOP ({c[f'{phase} GEMM FLOPs'] / 1e6:.3f} "
                     f"in GEMMs), {c[f'{phase} bytes'] / 1e6:8.3f} MB moved, "
                     f"{flops / max(c[f'{phase} bytes'], 1):5.1f} FLOP/byte")
    return "\n".join(lines) + "\n"
