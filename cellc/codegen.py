"""Code generation: a derivation (plan + symbolic backward) → the template's context.

This module decides *where every value lives* in the generated module and prints the
kernels' bodies and the forward/backward drivers as lists of lines. The Jinja2
template only places them (templates hold layout, not logic).

Storage (arrays are named `_<value>`, adjoints `_d__<value>`; user names never start
with `_` nor contain `__`, so these cannot collide):
  input x          `_x[T, B, I]`
  state h          `_h[T+1, B, H]`: `h` at step t is `_h[t]`, `h'` is `_h[t+1]`
  GEMM output      one buffer per fused GEMM, `_mm__<operand>[T, B, sum of widths]`,
                   each affine node a column block at a printed offset
  other node       `_<name>[T, B, D]` when read outside its kernel or by backward;
                   otherwise a local variable inside its fused kernel
Adjoints of per-step values are `[B, D]` buffers reused every step; adjoints of
static values, inputs and GEMM outputs are `[T, B, D]`, because the weight
gradients are big GEMMs over all steps after the loop.

The first write to an adjoint buffer in a step assigns, later ones accumulate, so no
buffer is cleared inside the time loop.
"""
from __future__ import annotations

from .ir import display_name, new_name
from .passes.derive import Derivation, adjoint
from .passes.schedule import Gemm, Region
from .printer import kernel_source


class _Layout:
    """Where each value and adjoint lives, as Python source for the generated driver."""

    def __init__(self, d: Derivation):
        plan, cell = d.plan, d.plan.cell
        self.cell = cell
        self.params = {p.name: p for p in cell.params}
        self.inputs = {v.name for v in cell.inputs}
        self.states = {v.name: v.dim for v in cell.states}
        self.new_states = {new_name(s): s for s in self.states}
        self.static = plan.static_values
        self.dim = cell.dim_of()
        self.member: dict[str, tuple[Gemm, str]] = {}
        self.gemms: list[tuple[str, Gemm]] = []
        for kind, program in (("static", plan.static), ("step", plan.step)):
            for stage in program:
                for g in stage.gemms:
                    self.gemms.append((kind, g))
                    offset = []
                    for n in g.nodes:
                        self.member[n.name] = (g, " + ".join(offset) or "0")
                        offset.append(n.dim)
        region_of = {n.name: r for _, r in self.regions(plan) for n in r.nodes}
        outside = set(d.saved) | {cell.output}
        outside.update(o for _, r in self.regions(plan) for o in r.outputs)
        self.stored = [n.name for n in cell.nodes
                       if n.name in outside and n.name in region_of
                       and n.name not in self.new_states]

    @staticmethod
    def regions(plan):
        for kind, program in (("static", plan.static), ("step", plan.step)):
            for stage in program:
                for r in stage.regions:
                    yield kind, r

    def width(self, g: Gemm) -> str:
        return " + ".join(n.dim for n in g.nodes)

    # ---- forward values --------------------------------------------------------
    def value(self, name: str, where: str) -> tuple[str, str | None]:
        """(array expression, column offset) of a vector value in a static/step context."""
        if name in self.params:
            return f"_{name}", None
        if name in self.member:
            g, offset = self.member[name]
            return self.at(f"_{g.name}", self.width(g), where), offset
        if name in self.states:
            return f"_{name}[t]", "0"
        if name in self.new_states:
            return f"_{self.new_states[name]}[t + 1]", "0"
        return self.at(f"_{name}", self.dim[name], where), "0"

    @staticmethod
    def at(array: str, width: str, where: str) -> str:
        return f"{array}[t]" if where == "step" else f"{array}.reshape(T * B, {width})"

    # ---- adjoints ----------------------------------------------------------------
    def adjoint(self, name: str, where: str) -> tuple[str, str | None]:
        if name in self.params:
            return f"_{adjoint(name)}", None
        if name in self.member:
            g, offset = self.member[name]
            return self.at(f"_{adjoint(g.name)}", self.width(g), where), offset
        if name in self.states or name in self.new_states:
            return f"_{adjoint(name)}", "0"
        if name in self.inputs or name in self.static:
            return self.at(f"_{adjoint(name)}", self.dim[name], where), "0"
        return f"_{adjoint(name)}", "0"          # per-step buffer [B, D]

    def block(self, name: str, where: str, adjoint: bool = False) -> str:
        """A 2-D [rows, D] array expression for value `name` (or its adjoint), slicing
        the column block out of a fused GEMM buffer where needed."""
        array, offset = (self.adjoint if adjoint else self.value)(name, where)
        if name in self.member:
            return f"{array}[:, {offset}:{offset} + {self.dim[name]}]"
        return array


def _element(array: str, offset: str | None) -> str:
    if offset is None:
        return f"{array}[j__]"
    return f"{array}[r__, j__]" if offset == "0" else f"{array}[r__, {offset} + j__]"


class _Kernel:
    """Collects one fused kernel: its array arguments, loads, body and stores."""

    def __init__(self, name: str, dim: str):
        self.name, self.dim = name, dim
        self.arrays: dict[str, str] = {}     # driver expression -> kernel argument name
        self.dims = {dim}
        self.loads, self.body, self.stores = [], [], []

    def arg(self, expr: str, offset: str | None) -> str:
        if expr not in self.arrays:
            base = expr.split("[")[0].split(".")[0] + ("__new" if expr.endswith("[t + 1]") else "")
            name, k = base, 2
            while name in self.arrays.values():
                name, k = f"{base}_{k}", k + 1
            self.arrays[expr] = name
        if offset not in (None, "0"):
            self.dims.update(offset.replace("+", " ").split())
        return self.arrays[expr]

    def context(self) -> dict:
        dims = sorted(self.dims)
        return {"name": self.name, "dim": self.dim, "dims": dims,
                "args": list(self.arrays.values()), "call_args": list(self.arrays),
                "dtype_of": next(iter(self.arrays.values())),
                "loads": self.loads, "body": self.body, "stores": self.stores}


def build_context(d: Derivation, *, version: str, source_name: str,
                  equations: list[str]) -> dict:
    cell = d.plan.cell
    layout = _Layout(d)
    kernels: list[dict] = []
    forward: list[str] = []
    backward: list[str] = []

    def call(kernel: _Kernel, rows: str) -> str:
        ctx = kernel.context()
        kernels.append(ctx)
        return f"_{kernel.name}({rows}, {', '.join(ctx['dims'] + ctx['call_args'])})"

    def fwd_kernel(kind: str, region: Region) -> str:
        k = _Kernel(f"fwd_{region.name}", region.dim)
        for name in region.inputs:
            array, offset = layout.value(name, kind)
            k.loads.append(f"{name} = {_element(k.arg(array, offset), offset)}")
        for node in region.nodes:
            k.body.append(f"{node.name} = {kernel_source(node.expr)}")
            if node.name in layout.stored or node.name in layout.new_states:
                array, offset = layout.value(node.name, kind)
                k.stores.append(f"{_element(k.arg(array, offset), offset)} = {node.name}")
        return call(k, "T * B" if kind == "static" else "B")

    def bwd_kernel(kind: str, region: Region, written: set) -> str:
        grad = (d.static if kind == "static" else d.step)[region.name]
        k = _Kernel(f"bwd_{region.name}", region.dim)
        for name in grad.reads:
            array, offset = layout.value(name, kind)
            k.loads.append(f"{name} = {_element(k.arg(array, offset), offset)}")
        for name in grad.seeds:
            array, offset = layout.adjoint(name, kind)
            k.loads.append(f"{adjoint(name)} = {_element(k.arg(array, offset), offset)}")
        for name, expr in grad.temps:
            k.body.append(f"{name} = {kernel_source(expr)}")
        for name, expr in grad.grads:
            array, offset = layout.adjoint(name, kind)
            target = _element(k.arg(array, offset), offset)
            accumulate = name in layout.params or name in written
            written.add(name)
            k.stores.append(f"{target} {'+=' if accumulate else '='} {kernel_source(expr)}")
        return call(k, "T * B" if kind == "static" else "B")

    # ---- forward ---------------------------------------------------------------
    for kind, gemm in layout.gemms:
        weights = [n.weight for n in gemm.nodes]
        joined = (f"params[{weights[0]!r}]" if len(weights) == 1 else
                  "np.concatenate((" + ", ".join(f"params[{w!r}]" for w in weights) + "), axis=1)")
        forward.append(f"_w__{gemm.name} = {joined}")
    for name in layout.stored:
        forward.append(f"_{name} = np.empty((T, B, {layout.dim[name]}), dtype)")
    for kind, program in (("static", d.plan.static), ("step", d.plan.step)):
        body = []
        for stage in program:
            for g in stage.gemms:
                operand = layout.block(g.operand, kind)
                if kind == "static":
                    body.append(f"_{g.name} = ({operand} @ _w__{g.name}).reshape(T, B, "
                                f"{layout.width(g)})")
                else:
                    body.append(f"np.matmul({operand}, _w__{g.name}, out=_{g.name}[t])")
            for region in stage.regions:
                body.append(fwd_kernel(kind, region))
        if kind == "step":
            for _, g in (x for x in layout.gemms if x[0] == "step"):
                forward.append(f"_{g.name} = np.empty((T, B, {layout.width(g)}), dtype)")
            forward.append("for t in range(T):")
            body = ["    " + line for line in body] or ["    pass"]
        forward.extend(body)

    # ---- backward --------------------------------------------------------------
    static_gemms = [g for kind, g in layout.gemms if kind == "static"]
    step_gemms = [g for kind, g in layout.gemms if kind == "step"]
    for p in cell.params:
        if len(p.shape) == 1:
            backward.append(f"_{adjoint(p.name)} = np.zeros_like(_{p.name})")
    for name in sorted(layout.inputs | set(layout.static)):
        if name not in layout.member:
            backward.append(f"_{adjoint(name)} = np.empty((T, B, {layout.dim[name]}), dtype)")
    for g in static_gemms + step_gemms:
        backward.append(f"_{adjoint(g.name)} = np.empty((T, B, {layout.width(g)}), dtype)")
    crossing = {seed for g in d.step.values() for seed in g.seeds}
    crossing.update(g.operand for g in step_gemms)
    crossing.add(cell.output)
    step_buffers = sorted(f"_{adjoint(n)}" for n in crossing
                          if n not in layout.static and n not in layout.states
                          and n not in layout.new_states and n not in layout.member)
    for s, dim in layout.states.items():
        backward.append(f"_{adjoint(s)} = np.empty((B, {dim}), dtype)")
        backward.append(f"_{adjoint(new_name(s))} = carry__[{s!r}]")
    for buffer in step_buffers:
        name = buffer[len("_d__"):]
        backward.append(f"{buffer} = np.empty((B, {layout.dim[name]}), dtype)")

    loop: list[str] = []
    written = set(layout.new_states)          # carried in from the step after
    out = cell.output
    if out in layout.new_states:
        loop.append("if dy__ is not None:")
        loop.append(f"    _{adjoint(out)} += dy__[t]")
    else:
        loop.append(f"{layout.block(out, 'step', adjoint=True)} = 0 if dy__ is None else dy__[t]")
        written.add(out)

    def gemm_transpose(g: Gemm, kind: str, written: set) -> list[str]:
        dm, _ = layout.adjoint(g.nodes[0].name, kind)
        target = layout.block(g.operand, kind, adjoint=True)
        if g.operand in written:
            return [f"{target} += {dm} @ _w__{g.name}.T"]
        written.add(g.operand)
        return [f"np.matmul({dm}, _w__{g.name}.T, out={target})"]

    for stage in reversed(d.plan.step):
        for region in stage.regions:
            loop.append(bwd_kernel("step", region, written))
        for g in stage.gemms:
            loop.extend(gemm_transpose(g, "step", written))
    for s in layout.states:
        if s not in written:
            loop.append(f"_{adjoint(s)}[...] = 0")
        loop.append(f"_{adjoint(s)}, _{adjoint(new_name(s))} = "
                    f"_{adjoint(new_name(s))}, _{adjoint(s)}")
    backward.append("for t in range(T - 1, -1, -1):")
    backward.extend("    " + line for line in loop)

    # Buffers of [T, ...] adjoints written inside the loop count as written for the
    # static backward that follows (the loop covered every t).
    static_written = {n for n in written if n in layout.inputs or n in layout.static}
    for stage in reversed(d.plan.static):
        for region in stage.regions:
            backward.append(bwd_kernel("static", region, static_written))
        for g in stage.gemms:
            backward.extend(gemm_transpose(g, "static", static_written))
    for x in sorted(layout.inputs):
        if x not in static_written:
            backward.append(f"_{adjoint(x)}[...] = 0")
    weight_done: set[str] = set()
    for kind, g in layout.gemms:
        operand = layout.block(g.operand, "static")
        if g.operand in layout.states:
            operand = f"_{g.operand}[:T].reshape(T * B, {layout.dim[g.operand]})"
        elif g.operand in layout.new_states:
            s = layout.new_states[g.operand]
            operand = f"_{s}[1:].reshape(T * B, {layout.dim[s]})"
        dm = f"_{adjoint(g.name)}.reshape(T * B, {layout.width(g)})"
        backward.append(f"gw__ = {operand}.T @ {dm}")
        for node in g.nodes:
            _, offset = layout.member[node.name]
            block = f"gw__[:, {offset}:{offset} + {node.dim}]"
            if node.weight in weight_done:
                backward.append(f"_{adjoint(node.weight)} += {block}")
            else:
                weight_done.add(node.weight)
                backward.append(f"_{adjoint(node.weight)} = np.ascontiguousarray({block})")

    saved = sorted({f"_{n}" for n in layout.stored} | {f"_{s}" for s in layout.states}
                   | {f"_w__{g.name}" for _, g in layout.gemms}
                   | {f"_{g.name}" for _, g in layout.gemms})
    output_expr = (f"_{layout.new_states[out]}[1:]" if out in layout.new_states else f"_{out}")
    return {
        "cell": cell,
        "version": version,
        "source_name": source_name,
        "equations": equations,
        "kernels": kernels,
        "forward": forward,
        "backward": backward,
        "saved": saved,
        "output_expr": output_expr,
        "output_dim": cell.dim_of()[out],
        "output_display": display_name(out),
        "dims": tuple(cell.dims),
        "vector_params": [p.name for p in cell.params if len(p.shape) == 1],
    }

