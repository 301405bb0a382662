"""Where every value and adjoint of a compiled cell lives, as arrays of the program tree.

Training (`Storage(d)`), arrays named by `naming.array`:
  input x          `_x[T, B, I]`
  state h          `_h[T+1, B, H]`: h at step t is `_h[t]`, h' is `_h[t+1]`
  GEMM output      one buffer per fused GEMM, `_mm__x[T, B, 4*H]`, each product a column
                   block; `[B, 4*H]`, reused every step, when backward reads none of it
  other node       `_v[T, B, D]` when read outside its kernel or by backward; otherwise a
                   local variable inside its fused kernel
Adjoints of per-step values are `[B, D]` buffers reused every step; adjoints of static
values, inputs and GEMM outputs are `[T, B, D]`, because the weight gradients are big
GEMMs over all steps after the loop.

The forward that saves nothing (`Storage(d, training=False)`) keeps only what the steps
need: every per-step value a `[B, D]` buffer, the output `[T, B, D]`, and each state
`[2, B, D]` (h at step t in `_h[t % 2]`), except a state that is the output, which keeps
its whole sequence. It runs the steps in chunks of `chunk__` (steps t0__ to t1__ - 1),
the static program once per chunk, so that the hoisted input projections take
`[chunk__, B, w]` instead of `[T, B, w]` (at T = 4,000 an LSTM's are 4 times its output).

A `Place` is what a kernel sees of one value: the 2-D view it takes for the step (or the
1-D parameter), the value's first column in it, and the kernel parameter's name.
"""
from __future__ import annotations

from typing import NamedTuple

import sympy

from .. import naming
from ..ir.cell import ONE
from ..ir.derivation import Derivation, RegionGrad
from ..ir.plan import Gemm
from .tree import Array, View

T = sympy.Symbol("T", integer=True, positive=True)
B = sympy.Symbol("B", integer=True, positive=True)
STEP = sympy.Symbol(naming.TIME, integer=True, nonnegative=True)
RUNNING = sympy.Symbol(naming.RUNNING, integer=True, nonnegative=True)
CHUNK = sympy.Symbol(naming.CHUNK, integer=True, positive=True)
FIRST = sympy.Symbol(naming.FIRST, integer=True, nonnegative=True)
STOP = sympy.Symbol(naming.STOP, integer=True, nonnegative=True)
SPAN = sympy.Symbol(naming.SPAN, integer=True, positive=True)


def size(dim: str) -> sympy.Expr:
    """The number of units of dimension `dim` (1 for a per-row scalar)."""
    return sympy.S.One if dim == ONE else sympy.Symbol(naming.code(dim), integer=True, positive=True)


class Place(NamedTuple):
    view: View            # what the kernel takes: [rows, width] (or a 1-D parameter)
    col: sympy.Expr       # the value's first column in it
    param: str            # the kernel parameter's name for the view


class Storage:
    """Where each value and adjoint lives (see the module docstring). Everything is
    decided when it is made; the methods only answer."""

    def __init__(self, d: Derivation, training: bool = True):
        plan, cell = d.plan, d.plan.cell
        self.training = training
        self.chunked = not training        # static program per chunk of steps
        self.cell = cell
        self.params = {p.name: p for p in cell.params}
        self.inputs = {v.name: v.dim for v in cell.inputs}
        self.constants = {v.name for v in cell.inputs if not v.grad}    # no adjoint
        self.states = {v.name: v.dim for v in cell.states}
        self.new_states = {naming.new(s): s for s in self.states}
        self.static = plan.static_values
        self.dim = cell.dim_of()
        self.gemms = plan.gemms()
        self.member: dict[str, tuple[Gemm, sympy.Expr]] = {}
        for _, g in self.gemms:
            offset = sympy.S.Zero
            for n in g.nodes:
                self.member[n.name] = (g, offset)
                offset += size(n.dim)
        step_gemms = [g for kind, g in self.gemms if kind == "step"]
        # A per-step GEMM whose outputs backward never reads needs one [B, w] buffer
        # (unless it computes the output sequence).
        self.transient = {g.operand for g in step_gemms
                          if not any(n.name == cell.output or (training and n.name in d.saved)
                                     for n in g.nodes)}
        region_of = {n.name: r for _, r in plan.regions() for n in r.nodes}
        crossing = {o for _, r in plan.regions() for o in r.outputs}
        needed = crossing | {cell.output} | (set(d.saved) if training else set())
        self.stored = [n.name for n in cell.nodes if n.name in needed and n.name in region_of
                       and n.name not in self.new_states]
        # Inference: a step value only the same step reads is a [B, D] buffer.
        self.buffered = set() if training else {
            n for n in self.stored if n not in self.static and n != cell.output}
        # A state is a whole sequence in training, and in inference only as the output.
        self.sequence_states = {s for s in self.states
                                if training or naming.new(s) == cell.output}
        # How many kernels and GEMMs write each value's adjoint.
        self.writers: dict[str, int] = {}
        for _, r in plan.regions():
            for name in r.inputs:
                self.writers[name] = self.writers.get(name, 0) + 1
        for _, g in self.gemms:
            self.writers[g.operand] = self.writers.get(g.operand, 0) + 1
        self.shared = self._shared_adjoints(d)

    def _shared_adjoints(self, d: Derivation) -> dict[str, str]:
        """GEMMs whose outputs have identical adjoints share one adjoint buffer: the
        operand of the GEMM whose buffer is used, by the operand of each GEMM that shares.

        In an LSTM, d(x @ W_x*) and d(h @ W_h*) are both the gradient of the
        pre-activations; storing it once halves the backward kernel's biggest writes."""
        single = {}
        for grad in d.grads.values():
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
                owners.append((g.operand, key))
            else:
                shared[g.operand] = owner
        return shared

    # ---- arrays ----------------------------------------------------------------------
    def width(self, g: Gemm) -> sympy.Expr:
        return sum((size(n.dim) for n in g.nodes), sympy.S.Zero)

    def param_array(self, name: str) -> Array:
        p = self.params[name]
        return Array(naming.array(name), tuple(size(d) for d in p.shape))

    def steps(self, name: str) -> tuple:
        """The first axis of the array of a value computed for every step: T, or for a
        static value in the chunked forward, the steps of one chunk."""
        return (CHUNK,) if self.chunked and name in self.static else (T,)

    def gemm_array(self, g: Gemm) -> Array:
        steps = () if g.operand in self.transient else self.steps(g.nodes[0].name)
        return Array(naming.array(naming.gemm(g.operand)), (*steps, B, self.width(g)))

    def weights(self, g: Gemm) -> Array:
        return Array(naming.array(naming.weights(g.operand)),
                     (size(self.dim[g.operand]), self.width(g)))

    def weights_transposed(self, g: Gemm) -> Array:
        return Array(naming.array(naming.weights_transposed(g.operand)),
                     (self.width(g), size(self.dim[g.operand])))

    def state_array(self, state: str) -> Array:
        steps = T + 1 if state in self.sequence_states else 2
        return Array(naming.array(state), (steps, B, size(self.states[state])))

    def value_array(self, name: str) -> Array:
        """The array of a stored node (or an input)."""
        steps = () if name in self.buffered else self.steps(name)
        return Array(naming.array(name), (*steps, B, size(self.dim[name])))

    def gemm_of(self, operand: str) -> Gemm:
        return next(g for _, g in self.gemms if g.operand == operand)

    def adjoint_gemm_array(self, g: Gemm) -> Array:
        """The adjoint buffer of a fused GEMM's outputs (shared ones: the owner's)."""
        owner = self.gemm_of(self.shared.get(g.operand, g.operand))
        return Array(naming.array(naming.adjoint(naming.gemm(owner.operand))),
                     (T, B, self.width(owner)))

    def adjoint_array(self, name: str) -> Array:
        """The adjoint of a value that is not a GEMM output: [T, B, D] for inputs and
        static values, a [B, D] buffer reused every step otherwise."""
        steps = (T,) if name in self.inputs or name in self.static else ()
        return Array(naming.array(naming.adjoint(name)), (*steps, B, size(self.dim[name])))

    # ---- places: what a kernel of `program` ("static" or "step") sees ------------------
    def rows(self, program: str) -> sympy.Expr:
        """How many rows a kernel of `program` runs over: all steps' (or one chunk's),
        or the rows of step t still running."""
        if program == "static":
            return SPAN * B if self.chunked else T * B
        return RUNNING

    def _at(self, array: Array, program: str) -> View:
        """The [rows, width] view of `array` that a kernel of `program` takes."""
        if len(array.shape) < 3:
            return View(array)
        chunk = array.shape[0] == CHUNK           # its first step is t0__
        if program == "static":
            steps = ((sympy.S.Zero, SPAN) if chunk else (FIRST, STOP) if self.chunked
                     else (sympy.S.Zero, T))
            return View(array, steps=steps, flat=True)
        return View(array, step=STEP - FIRST if chunk else STEP)

    def value(self, name: str, program: str) -> Place:
        if name in self.params:
            return Place(View(self.param_array(name)), sympy.S.Zero, naming.array(name))
        if name in self.member:
            g, offset = self.member[name]
            array = self.gemm_array(g)
            return Place(self._at(array, program), offset, array.name)
        if name in self.states:
            return self._state(name, STEP, naming.array(name))
        if name in self.new_states:
            state = self.new_states[name]
            return self._state(state, STEP + 1, naming.array(name))
        if name in self.inputs:
            array = Array(naming.array(name), (T, B, size(self.inputs[name])))
            return Place(self._at(array, program), sympy.S.Zero, array.name)
        array = self.value_array(name)
        return Place(self._at(array, program), sympy.S.Zero, array.name)

    def _state(self, state: str, step, param: str) -> Place:
        array = self.state_array(state)
        if state not in self.sequence_states:
            step = sympy.Mod(step, 2)
        return Place(View(array, step=step), sympy.S.Zero, param)

    def adjoint(self, name: str, program: str) -> Place:
        if name in self.member:
            g, offset = self.member[name]
            array = self.adjoint_gemm_array(g)
            if g.operand in self.shared:       # columns as the owner lays them out
                owner = self.gemm_of(self.shared[g.operand])
                k = [n.name for n in g.nodes].index(name)
                offset = self.member[owner.nodes[k].name][1]
            return Place(self._at(array, program), offset, array.name)
        if name in self.states or name in self.new_states:
            array = Array(naming.array(naming.adjoint(name)), (B, size(self.dim[name])))
            return Place(View(array), sympy.S.Zero, array.name)
        array = self.adjoint_array(name)
        return Place(self._at(array, program), sympy.S.Zero, array.name)

    # ---- vector parameters' gradients -------------------------------------------------
    def param_terms(self, grad: RegionGrad, param: str) -> View | None:
        """Where a vector parameter's per-element gradient terms already are: summing
        inside the kernel (`d[j] += ...`) would stop LLVM from vectorizing it, so its
        gradient is one column sum after the loop. When its term equals the adjoint of
        another input that this kernel alone writes to a [T, ...] buffer (a bias beside a
        GEMM output), that buffer's block is summed (returned here); otherwise (None) the
        kernel stores the terms in a buffer of their own (`terms`)."""
        expr = dict(grad.grads)[param]
        for other, other_expr in grad.grads:
            if (other not in self.params and other_expr == expr
                    and self.writers.get(other) == 1
                    and (other in self.member or other in self.inputs or other in self.static)):
                return self.block(other, "static", grad=True)
        return None

    def terms(self, param: str, region: str, program: str) -> Place:
        """The buffer of a vector parameter's per-element gradient terms in one region: a
        step region's, one step's [B, D], added to `term_sums` after its kernel while they
        are in cache (a [T, B, D] buffer summed after the loop cost memory and a pass over
        it); a static region's, all rows at once."""
        width = size(self.dim[param])
        shape = (B, width) if program == "step" else (T, B, width)
        array = Array(naming.array(naming.terms(param, region)), shape)
        return Place(self._at(array, program), sympy.S.Zero, array.name)

    def term_sums(self, param: str, region: str) -> Array:
        """The running column sums of a step region's terms (zeroed before the loop): the
        sums, what their compensated addition lost, and one step's sums (see the runtime's
        `_add_column_sums`). A plain float32 running sum over 10,000 steps of a scalar
        parameter's terms was 1.2e-5 off, where numpy's pairwise column sum after the loop
        had met 1e-5."""
        return Array(naming.array(naming.term_sums(param, region)), (3, size(self.dim[param])))

    def block(self, name: str, program: str, grad: bool = False) -> View:
        """A value's (or its adjoint's) own [rows, D] block, for GEMMs and copies."""
        place = (self.adjoint if grad else self.value)(name, program)
        if name in self.member:
            return place.view._replace(cols=(place.col, size(self.dim[name])))
        return place.view
