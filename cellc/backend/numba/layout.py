"""Where every value and adjoint of a compiled cell lives in the generated module.

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
"""
from __future__ import annotations

from ...ir.cell import new_name
from ...passes.derive import Derivation, adjoint
from ...passes.schedule import Gemm


class Layout:
    """Where each value and adjoint lives, as Python source for the generated driver."""

    def __init__(self, d: Derivation):
        plan, cell = d.plan, d.plan.cell
        self.cell = cell
        self.params = {p.name: p for p in cell.params}
        self.inputs = {v.name for v in cell.inputs}
        self.constants = {v.name for v in cell.inputs if not v.grad}    # no adjoint
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
        # A per-step GEMM whose outputs backward never reads needs one [B, w] buffer,
        # not one per step.
        self.transient = {g.name for kind, g in self.gemms if kind == "step"
                          and not any(n.name in d.saved for n in g.nodes)}
        # How many kernels and GEMMs write each value's adjoint.
        self.writers: dict[str, int] = {}
        for _, r in self.regions(plan):
            for name in r.inputs:
                self.writers[name] = self.writers.get(name, 0) + 1
        for _, g in self.gemms:
            self.writers[g.operand] = self.writers.get(g.operand, 0) + 1
        self.shared = self.shared_adjoints(d)
        region_of = {n.name: r for _, r in self.regions(plan) for n in r.nodes}
        outside = set(d.saved) | {cell.output}
        outside.update(o for _, r in self.regions(plan) for o in r.outputs)
        self.stored = [n.name for n in cell.nodes
                       if n.name in outside and n.name in region_of
                       and n.name not in self.new_states]

    def shared_adjoints(self, d: Derivation) -> dict[str, str]:
        """GEMMs whose outputs have identical adjoints share one adjoint buffer.

        In an LSTM, d(x @ W_x*) and d(h @ W_h*) are both the gradient of the
        pre-activations; storing it once halves the backward kernel's biggest writes."""
        single = {}
        for grad in (*d.static.values(), *d.step.values()):
            for name, expr in grad.grads:
                if name in self.member and self.writers.get(name) == 1:
                    single[name] = (grad.region.name, expr)
        shared, owners = {}, []
        for _, g in self.gemms:
            key = tuple((n.dim, single.get(n.name)) for n in g.nodes)
            if any(k[1] is None for k in key):
                continue
            owner = next((o for o, k in owners if k == key), None)
            if owner is None:
                owners.append((g.name, key))
            else:
                shared[g.name] = owner
        return shared

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
            if g.name in self.transient:
                return f"_{g.name}", offset
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
            buffer = self.shared.get(g.name, g.name)
            return self.at(f"_{adjoint(buffer)}", self.width(g), where), offset
        if name in self.states or name in self.new_states:
            return f"_{adjoint(name)}", "0"
        if name in self.inputs or name in self.static:
            return self.at(f"_{adjoint(name)}", self.dim[name], where), "0"
        return f"_{adjoint(name)}", "0"          # per-step buffer [B, D]

    def block(self, name: str, where: str, grad: bool = False) -> str:
        """A 2-D [rows, D] array expression for value `name` (or its adjoint), slicing
        the column block out of a fused GEMM buffer where needed."""
        array, offset = (self.adjoint if grad else self.value)(name, where)
        if name in self.member:
            return f"{array}[:, {offset}:{offset} + {self.dim[name]}]"
        return array
