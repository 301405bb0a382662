"""The drivers and time loops of a compiled cell, as one program tree: `lower(d)`.

forward   bind the parameters and inputs and the states' sequences; fuse each GEMM's
          weights; run the static program over all T·B rows (the hoisted input GEMMs and
          their kernels); then the time loop `_steps__fwd`: per step, each stage's GEMMs
          on the rows still running, then its kernels; rows of sequences that have ended
          are zeroed.
backward  the time loop in reverse (`_steps__bwd`): per step the kernels, last stage
          first, and the transposed GEMMs that carry adjoints back to their operands;
          then the static program's backward, the vector parameters' column sums and
          the weight gradients, one big GEMM per fused GEMM over all steps.
infer     the forward that saves nothing (`Storage(d, training=False)`), its own kernels
          where they differ from the training forward's.
"""
from __future__ import annotations

import sympy

from .. import naming
from ..ir import weights
from ..ir.derivation import Derivation
from .kernels import Writes, backward_kernel, backward_writes, forward_kernel
from .storage import CHUNK, FIRST, RUNNING, SPAN, STEP, STOP, B, Storage, T, size
from .tree import (
    AddColumnSums,
    Alloc,
    Argument,
    Array,
    Assign,
    Bind,
    Call,
    ColumnSums,
    Concat,
    Copy,
    CopyRows,
    Element,
    Fill,
    Function,
    Gemm,
    If,
    Loop,
    MatrixValue,
    Param,
    Program,
    SetView,
    SumOf,
    Swap,
    Transpose,
    View,
    walk,
)

ENDING = sympy.Symbol(naming.ENDING, integer=True, nonnegative=True)
HAS_D_OUTPUTS = sympy.Symbol(naming.HAS_D_OUTPUTS)
D_OUTPUT = naming.D_OUTPUT


def lower(d: Derivation) -> Program:
    """The program tree of a derivation: every function, and the drivers' statements."""
    functions: dict[str, Function] = {}
    train, infer = Storage(d), Storage(d, training=False)
    forward = _forward(d, train, functions, naming.FORWARD)
    backward, results = _backward(d, train, backward_writes(d, train), functions)
    inference = _forward(d, infer, functions, naming.INFER)
    saved = _saved(d, train)
    return Program(tuple(functions.values()), tuple(forward), tuple(backward), tuple(inference),
                   saved, _output(d, train), _output(d, infer),
                   tuple((s, train.state_array(s)) for s in train.states),
                   tuple((s, infer.state_array(s)) for s in infer.states), results)


def _add(functions: dict, f: Function) -> str:
    """Add a function; a kernel equal to one already made (an inference kernel that
    stores what the training one stores) is not made twice. Returns its name."""
    for known in functions.values():
        if known._replace(name="") == f._replace(name=""):
            return known.name
    functions[f.name] = f
    return f.name


def _call(functions: dict, built) -> Call:
    function, args = built
    return Call(_add(functions, function), args)


# ---- forward ---------------------------------------------------------------------------
def _forward(d: Derivation, storage: Storage, functions: dict, direction: str) -> list:
    cell = d.plan.cell
    body = [Argument(Array(naming.array(v.name), (T, B, size(v.dim))), "inputs", v.name)
            for v in cell.inputs]
    body += [Argument(storage.param_array(p.name), "params", p.name) for p in cell.params
             if p.derived is None]
    body += [MatrixValue(storage.param_array(p.name), _on_arrays(storage, p.derived))
             for p in cell.params if p.derived is not None]
    for s in cell.states:
        array = storage.state_array(s.name)
        body += [Alloc(array), SetView(View(array, step=sympy.S.Zero), Argument(
            Array(naming.array(s.name), (B, size(s.dim))), "states", s.name))]
    for _, g in storage.gemms:
        body.append(Concat(storage.weights(g), tuple(View(storage.param_array(n.weight))
                                                     for n in g.nodes)))
    if storage.chunked:
        body.append(Assign(CHUNK, sympy.Max(1, sympy.Min(T, sympy.Symbol("_CHUNK_STEPS")))))
    body += [Alloc(storage.value_array(name)) for name in storage.stored]
    body += [Alloc(storage.gemm_array(g)) for _, g in storage.gemms]
    static = []
    for stage in d.plan.static:
        for g in stage.gemms:
            static.append(Gemm(storage.block(g.operand, "static"), View(storage.weights(g)),
                               storage.value(g.nodes[0].name, "static").view))
        for region in stage.regions:
            static.append(_call(functions, forward_kernel(region, "static", storage, direction)))
    loop = [Assign(RUNNING, Element.of(naming.ACTIVE, (STEP,)))]
    for stage in d.plan.step:
        for g in stage.gemms:
            loop.append(Gemm(storage.block(g.operand, "step")._replace(rows=RUNNING),
                             View(storage.weights(g)),
                             storage.value(g.nodes[0].name, "step").view._replace(rows=RUNNING)))
        for region in stage.regions:
            loop.append(_call(functions, forward_kernel(region, "step", storage, direction)))
    loop += _ended_rows(loop, functions, storage)
    if not storage.chunked:
        steps = _steps(functions, naming.steps(direction), [Loop(STEP, T, tuple(loop), "steps")], ())
        return body + static + [steps]
    steps = _steps(functions, naming.steps(direction),
                   [Loop(STEP, STOP, tuple(loop), "steps", start=FIRST)], ())
    chunk = [Assign(STOP, sympy.Min(FIRST + CHUNK, T)), Assign(SPAN, STOP - FIRST), *static, steps]
    return body + [Loop(FIRST, T, tuple(chunk), "chunks", stride=CHUNK)]


def _ended_rows(loop: list, functions: dict, storage: Storage) -> list:
    """In a ragged batch (sorted by length), rows from `n__` on belong to sequences that
    have ended. Every per-step array the step wrote is zeroed there, so outputs past a
    sequence's end are zero and no stale value reaches the GEMMs after the loop, which
    run over all rows; a state kept in two alternating buffers (inference) carries its
    final value forward instead."""
    written = {}
    for s in loop:
        if isinstance(s, Gemm):
            written[s.out._replace(rows=None)] = True
        elif isinstance(s, Call) and s.function in functions:
            for param, value in s.args:
                if param.group == "writes":
                    written[value] = True
    per_step = sorted((v for v in written if v.step is not None),
                      key=lambda v: (v.array.name, str(v.step)))
    lines = []
    for v in per_step:
        state = next((s for s in storage.states if storage.state_array(s) == v.array), None)
        if state is not None and state not in storage.sequence_states:
            lines.append(CopyRows(v, v._replace(step=sympy.Mod(STEP, 2)), RUNNING, B))
        else:
            lines.append(Fill(v, sympy.S.Zero, RUNNING))
    return [If(sympy.StrictLessThan(RUNNING, B), tuple(lines))] if lines else []


def _output(d: Derivation, storage: Storage) -> View:
    out = d.plan.cell.output
    if out in storage.new_states:
        array = storage.state_array(storage.new_states[out])
        return View(array, steps=(sympy.S.One, T + 1))
    if out in storage.member:
        g, offset = storage.member[out]
        return View(storage.gemm_array(g), cols=(offset, size(storage.dim[out])))
    return View(storage.value_array(out))


def _saved(d: Derivation, storage: Storage) -> tuple:
    """What forward keeps for backward: stored values, states, the fused weights, and
    only those GEMM outputs that a backward expression reads (an LSTM's input
    projections are not kept: 40 % less saved memory, measured)."""
    arrays = [storage.value_array(n) for n in storage.stored]
    arrays += [storage.state_array(s) for s in storage.states]
    arrays += [storage.weights(g) for _, g in storage.gemms]
    arrays += [storage.gemm_array(g) for _, g in storage.gemms
               if any(n.name in d.saved for n in g.nodes)]
    return tuple(sorted(dict.fromkeys(arrays), key=lambda a: a.name))


# ---- the time loops as functions ------------------------------------------------------
def _steps(functions: dict, name: str, body: list, results: tuple) -> Call:
    """A time loop as a function of the arrays and scalars it uses but does not bind,
    and the call to it. Arrays go in groups by rank (a printer may pass a group as one
    tuple); names the loop swaps are returned as `results`."""
    arrays, names, local = {}, set(), set()
    for s in walk(body):
        if isinstance(s, Loop):
            local.add(s.index.name)
        elif isinstance(s, Assign) and isinstance(s.target, sympy.Symbol):
            local.add(s.target.name)
        elif isinstance(s, Bind):
            local.add(s.name)
        for value in _uses(s):
            if isinstance(value, View):
                arrays.setdefault(value.array.name, value.array)
                value = sympy.Tuple(*[x for x in (value.step, value.rows, *(value.steps or ()),
                                                  *(value.cols or ())) if x is not None])
            if isinstance(value, str):
                names.add(value)
            elif isinstance(value, sympy.Basic):
                names |= {e.array for e in value.atoms(Element)}
                names |= {x.name for x in value.free_symbols} - {e.args[0].name
                                                                 for e in value.atoms(Element)}
    names -= local | set(arrays)
    group = {1: "vectors", 2: "buffers", 3: "sequences"}
    params = [Param(n, "scalar") for n in sorted(names, key=_size_first)]
    params += [Param(n, group[len(a.shape)]) for n, a in sorted(arrays.items()) if n not in local]
    args = tuple((p, View(arrays[p.name]) if p.name in arrays else sympy.Symbol(p.name))
                 for p in params)
    functions[name] = Function(name, "steps", tuple(params), tuple(body), returns=results)
    return Call(name, args, results)


def _size_first(name: str):
    return (name not in ("T", "B"), name)


def _uses(s) -> tuple:
    """What a statement of a time loop refers to: views, expressions, swapped names."""
    if isinstance(s, Assign):
        return (s.target, s.value)
    if isinstance(s, Loop):
        return (s.start, s.stop)
    if isinstance(s, If):
        return (s.condition,)
    if isinstance(s, Bind):
        return (s.value,)
    if isinstance(s, Gemm):
        return (s.a, s.b, s.out)
    if isinstance(s, Call):
        return tuple(value for _, value in s.args)
    if isinstance(s, Fill):
        return (s.view, s.value, s.start if s.start is not None else sympy.S.Zero)
    if isinstance(s, CopyRows):
        return (s.dst, s.src, s.start, s.stop)
    if isinstance(s, SetView):
        return (s.dst, s.src)
    if isinstance(s, AddColumnSums):
        return (s.out, s.src)
    if isinstance(s, Swap):
        return (s.a, s.b)
    raise TypeError(f"no time loop holds a {type(s).__name__}")


# ---- backward --------------------------------------------------------------------------
def _backward(d: Derivation, storage: Storage, writes: Writes, functions: dict):
    cell, plan = d.plan.cell, d.plan
    body = [Argument(Array(naming.array(v.name), (T, B, size(v.dim))), "inputs", v.name)
            for v in cell.inputs]
    pulled = {s for p in cell.params if p.derived is not None      # what pullbacks read
              for _, share in weights.pullback(p.derived, weights.Ref(naming.adjoint(p.name)))
              for s in weights.sources(share)}
    body += [Argument(storage.param_array(p.name), "params", p.name) for p in cell.params
             if p.derived is None and (len(p.shape) == 1 or p.name in pulled)]
    for name in sorted((set(storage.inputs) | set(storage.static)) - storage.constants):
        if name not in storage.member:
            body.append(Alloc(storage.adjoint_array(name)))
    for _, g in storage.gemms:
        body.append(Transpose(storage.weights_transposed(g), View(storage.weights(g))))
        if g.operand not in storage.shared:
            body.append(Alloc(storage.adjoint_gemm_array(g)))
    for s, dim in storage.states.items():
        for name in (s, naming.new(s)):
            body.append(Alloc(storage.adjoint(name, "step").view.array))
        body.append(Argument(_upstream(storage, s), naming.UPSTREAMS, s))
    # per-step [B, D] adjoints that cross from one kernel or GEMM to another
    crossing = {n for kind, r in plan.regions() if kind == "step" for n in r.outputs}
    crossing |= {g.operand for kind, g in storage.gemms if kind == "step"}
    for n in sorted(crossing & writes.anywhere(("step",))):
        if not (n in storage.static or n in storage.states or n in storage.new_states
                or n in storage.member):
            body.append(Alloc(storage.adjoint_array(n)))
    for kind, region in plan.regions():
        for u in _own_terms(d.grads[region.name], storage):
            body.append(Alloc(storage.terms(u, region.name, kind).view.array))
            if kind == "step":
                sums = storage.term_sums(u, region.name)
                body += [Alloc(sums), Fill(View(sums))]
    body.append(_backward_steps(d, storage, writes, functions))
    body += _after_loop(d, storage, writes, functions)
    results = (tuple((p.name, naming.array(naming.adjoint(p.name))) for p in cell.params
                     if p.derived is None),
               tuple((v.name, naming.array(naming.adjoint(v.name))) for v in cell.inputs
                     if v.grad),
               tuple((s.name, naming.array(naming.adjoint(naming.new(s.name))))
                     for s in cell.states))
    return body, results


def _own_terms(grad, storage: Storage) -> list[str]:
    """The vector parameters whose gradient terms a region's backward kernel stores in a
    buffer of their own (no other buffer holds them)."""
    return [u for u, _ in grad.grads if u in storage.params and storage.param_terms(grad, u) is None]


def _upstream(storage: Storage, state: str) -> Array:
    return Array(naming.array(naming.upstream(state)), (B, size(storage.states[state])))


def _backward_steps(d: Derivation, storage: Storage, writes: Writes, functions: dict) -> Call:
    cell = d.plan.cell
    dy = Array(naming.D_OUTPUTS, (T, B, size(storage.dim[cell.output])))
    loop = [Assign(RUNNING, Element.of(naming.ACTIVE, (STEP,))),
            Assign(ENDING, Element.of(naming.ACTIVE, (STEP + 1,))),
            If(HAS_D_OUTPUTS, (Bind(D_OUTPUT, View(dy, step=STEP)),),
               (Bind(D_OUTPUT, View(dy, step=sympy.S.Zero)),))]
    # sequences whose last step is t (rows m__:n__) take the final states' gradients
    loop += [CopyRows(View(storage.adjoint(naming.new(s), "step").view.array),
                      View(_upstream(storage, s)), ENDING, RUNNING) for s in storage.states]
    if cell.output in storage.member:     # a product has no kernel to fold d_outputs into
        seed = storage.block(cell.output, "step", grad=True)
        loop.append(If(HAS_D_OUTPUTS, (SetView(seed, View(dy, step=STEP)),), (Fill(seed),)))
    loop += _backward_stages(d, "step", storage, writes, functions)
    loop += _ended_rows(loop, functions, storage)
    written = writes.anywhere(("step",))
    for s in storage.states:       # the adjoint of h_t becomes that of the previous step's h'
        d_s, d_new = (storage.adjoint(n, "step").view for n in (s, naming.new(s)))
        if s not in written:
            loop.append(Fill(d_s))
        loop.append(Swap(d_s.array.name, d_new.array.name))
    body = [Loop(STEP, T, tuple(loop), "steps", reverse=True)]
    # sequences of length 0: the initial states' gradients are the final states'
    body += [CopyRows(View(storage.adjoint(naming.new(s), "step").view.array),
                      View(_upstream(storage, s)), Element.of(naming.ACTIVE, (sympy.S.Zero,)), B)
             for s in storage.states]
    finals = tuple(storage.adjoint(naming.new(s), "step").view.array.name for s in storage.states)
    return _steps(functions, naming.steps(naming.BACKWARD), body, finals)


def _backward_stages(d: Derivation, program: str, storage: Storage, writes: Writes,
                     functions: dict) -> list:
    """A program's backward: its stages last first, in each the kernels (last region
    first), then the transposed GEMMs that carry adjoints back to their operands."""
    lines = []
    for stage in reversed(d.plan.step if program == "step" else d.plan.static):
        for region in reversed(stage.regions):
            grad = d.grads[region.name]
            lines.append(_call(functions, backward_kernel(grad, program, storage, writes)))
            if program == "step":
                lines += [AddColumnSums(View(storage.term_sums(u, region.name)),
                                        storage.terms(u, region.name, program).view._replace(rows=RUNNING))
                          for u in _own_terms(grad, storage)]
        lines += [_transposed_gemm(g, program, storage, writes) for g in stage.gemms]
    return lines


def _transposed_gemm(g, program: str, storage: Storage, writes: Writes) -> Gemm:
    """d(operand) (+)= d(outputs) @ W.T, with W.T made contiguous once per call:
    OpenBLAS's AVX-512 kernels are much slower on a transposed operand (LSTM 64x256
    step: 175 vs 113 us)."""
    d_out = storage.adjoint(g.nodes[0].name, program).view
    target = storage.block(g.operand, program, grad=True)
    accumulate = g.operand in writes.before((program, "gemm", g.operand))
    if program == "step":
        d_out, target = d_out._replace(rows=RUNNING), target._replace(rows=RUNNING)
    return Gemm(d_out, View(storage.weights_transposed(g)), target, accumulate)


def _after_loop(d: Derivation, storage: Storage, writes: Writes, functions: dict) -> list:
    cell = d.plan.cell
    lines = _backward_stages(d, "static", storage, writes, functions)
    written = writes.anywhere(("step", "static"))
    for x in sorted(set(storage.inputs) - storage.constants - written):
        lines.append(Fill(View(storage.adjoint_array(x))))
    # vector parameters: column sums over all rows, one per buffer
    terms: dict[str, list] = {}
    summed: dict[str, list] = {}        # step regions' terms, summed inside the loop
    for kind, region in d.plan.regions():
        grad = d.grads[region.name]
        for u, _ in grad.grads:
            if u in storage.params:
                view = storage.param_terms(grad, u)
                if view is None and kind == "step":
                    summed.setdefault(u, []).append(View(storage.term_sums(u, region.name),
                                                         step=sympy.S.Zero))
                    continue
                if view is None:
                    view = storage.terms(u, region.name, "static").view
                terms.setdefault(u, []).append(view)
    sums: dict[View, Array] = {}
    for view in (v for views in terms.values() for v in views):
        whole = view._replace(cols=None)
        if whole not in sums:
            sums[whole] = Array(naming.column_sums(len(sums)), (whole.array.shape[-1],))
            lines.append(ColumnSums(sums[whole], whole))
    for p in cell.params:
        if len(p.shape) == 1:
            parts = tuple(View(sums[v._replace(cols=None)], cols=v.cols) for v in terms.get(p.name, []))
            parts += tuple(summed.get(p.name, []))
            lines.append(SumOf(Array(naming.array(naming.adjoint(p.name)), (size(p.shape[0]),)),
                               parts, like=storage.param_array(p.name)))
    done: set[str] = set()
    for _, g in storage.gemms:          # weight gradients: one big GEMM per fused GEMM
        operand = storage.block(g.operand, "static")
        if g.operand in storage.states:
            operand = View(storage.state_array(g.operand), steps=(sympy.S.Zero, T), flat=True)
        elif g.operand in storage.new_states:
            operand = View(storage.state_array(storage.new_states[g.operand]),
                           steps=(sympy.S.One, T + 1), flat=True)
        d_out = View(storage.adjoint_gemm_array(g), steps=(sympy.S.Zero, T), flat=True)
        d_weights = Array(naming.array(naming.adjoint(naming.weights(g.operand))),
                          storage.weights(g).shape)
        lines += [Alloc(d_weights), Gemm(operand._replace(transposed=True), d_out, View(d_weights))]
        for node in g.nodes:
            offset = storage.member[node.name][1]
            lines.append(Copy(Array(naming.array(naming.adjoint(node.weight)),
                                    storage.param_array(node.weight).shape),
                              View(d_weights, cols=(offset, size(node.dim))),
                              accumulate=node.weight in done))
            done.add(node.weight)
    done |= {p.name for p in cell.params if len(p.shape) == 1}      # by SumOf above
    for p in cell.params:               # weight expressions: their gradients pulled back
        if p.derived is None:
            continue
        grad = weights.Ref(naming.adjoint(p.name))
        for source, share in weights.pullback(p.derived, grad):
            target = Array(naming.array(naming.adjoint(source)), storage.param_array(source).shape)
            lines.append(MatrixValue(target, _on_arrays(storage, share), accumulate=source in done))
            done.add(source)
    return lines


def _on_arrays(storage: Storage, m):
    """Weight expression `m` over the arrays that hold its parameters (and, in a
    pullback, the gradient `d__mat__k`)."""
    if isinstance(m, weights.Ref):
        return weights.Ref(naming.array(m.name))
    if isinstance(m, weights.Eye):
        return m
    if isinstance(m, weights.Scaled):
        arrays = {s: sympy.Symbol(naming.array(s.name)) for s in m.scale.free_symbols}
        return weights.Scaled(m.scale.xreplace(arrays), _on_arrays(storage, m.a))
    return type(m)(*(_on_arrays(storage, part) for part in m))
