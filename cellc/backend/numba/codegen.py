"""Code generation: a derivation (plan + symbolic backward) → the template's context.

This module prints the kernels' bodies and the forward/backward drivers as lists of
lines, using `layout.Layout` for where every value lives. The Jinja2 template only
places them (templates hold layout, not logic).

The first write to an adjoint buffer in a step assigns, later ones accumulate, so no
buffer is cleared inside the time loop. The per-step program becomes a Numba function
(`_forward__steps`, `_backward__steps`), so nothing runs in Python between steps.
"""
from __future__ import annotations

import ast

from ...ir.functions import CellFunction
from ...ir.cell import ONE, display_name, new_name
from .layout import Layout
from ...passes.derive import Derivation, accumulator, adjoint, levels
from ...passes.schedule import Gemm, Region
from .printer import kernel_source
from ...runtime.regularizers import Regularizers


def _element(array: str, offset: str | None, unit: str = "j__") -> str:
    """One element of a kernel argument: unit `j__` of row `r__` (per-row scalars of
    dimension ONE pass unit "0")."""
    if offset is None:
        return f"{array}[{unit}]"
    return f"{array}[r__, {unit}]" if offset == "0" else f"{array}[r__, {offset} + {unit}]"


class _Kernel:
    """Collects one fused kernel: its array arguments and the body of its row loop.

    The body is a list of lines (indented relative to `for r__ in range(rows__):`):
    per-row lines, and loops over the units of one row (`for j__ in range(D):`), one
    per level of reduction (see `passes/derive.py`); a region without reductions is a
    single unit loop, as it always was."""

    def __init__(self, name: str, dim: str):
        self.name, self.dim = name, dim
        self.arrays: dict[str, str] = {}     # driver expression -> kernel argument name
        self.dims = {dim} - {ONE}
        self.rows: list[str] = []
        self.scratch: list[str] = []         # rows of scratch, allocated once per call
        self.blocks: list[tuple[str, str, str]] = []     # (row scratch, target, = or +=)

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

    def row_scratch(self, name: str) -> str:
        if name not in self.scratch:
            self.scratch.append(name)
        return name

    def unit_loop(self, lines: list[str]) -> None:
        """Append a loop over the units of the row, if it has anything to do."""
        if lines:
            self.rows.append(f"for j__ in range({self.dim}):")
            self.rows.extend("    " + line for line in lines)

    def store_block(self, target: str, op: str, expr: str) -> str:
        """A store into one column block of a fused buffer goes through a row of scratch,
        copied after the row: LLVM does not vectorize a loop that stores into several
        blocks of one array at a run-time offset (LSTM backward kernel: 4.5 ns per
        element, 0.71 through scratch). Returns the line that fills the scratch."""
        scratch = self.row_scratch(f"s__{len(self.blocks)}")
        self.blocks.append((scratch, target, op))
        return f"{scratch}[j__] = {expr}"

    def context(self) -> dict:
        rows = list(self.rows)
        for scratch, target, op in self.blocks:
            rows += [f"for j__ in range({self.dim}):", f"    {target} {op} {scratch}[j__]"]
        dims = sorted(self.dims)
        return {"name": self.name, "dim": self.dim, "dims": dims,
                "args": list(self.arrays.values()), "call_args": list(self.arrays),
                "dtype_of": next(iter(self.arrays.values())),
                "rows": rows, "scratch": self.scratch}


class _Emitter:
    """Prints the kernels and the forward/backward drivers of one derivation."""

    def __init__(self, d: Derivation):
        self.d, self.cell = d, d.plan.cell
        self.layout = Layout(d)
        self.kernels: list[dict] = []
        # vector param -> [(array of rows, column offset or None for all, width)]
        self.reductions: dict[str, list[tuple[str, str | None, str]]] = {}
        self.step_functions: list[dict] = []
        self.step_arrays: set[str] = set()      # per-step arrays the time loop writes
        self.term_buffers: list[str] = []

    def call(self, kernel: _Kernel, kind: str) -> str:
        ctx = kernel.context()
        self.kernels.append(ctx)
        rows = "T * B" if kind == "static" else "n__"
        return f"_{kernel.name}({rows}, {', '.join(ctx['dims'] + ctx['call_args'])})"

    def load(self, k: _Kernel, local: str, access: tuple[str, str | None]) -> str:
        array, offset = access
        unit = "0" if self.layout.dim.get(local) == ONE else "j__"
        return f"{local} = {_element(k.arg(array, offset), offset, unit)}"

    def is_scalar(self, name: str) -> bool:
        return self.layout.dim.get(name) == ONE

    # ---- forward ---------------------------------------------------------------
    def fwd_kernel(self, kind: str, region: Region) -> str:
        """Level by level (see `passes/derive.py`): the per-row scalars of a level,
        then one loop over the units computing that level's vectors and summing the
        next level's reductions. A vector read again at a higher level is kept in a
        row of scratch (`cache__v`; `cache` is a reserved word, so no value's name starts so)."""
        L = self.layout
        k = _Kernel(f"fwd__{region.name}", region.dim)
        level = levels(region)
        k.rows += [self.load(k, u, L.value(u, kind)) for u in region.inputs if self.is_scalar(u)]
        kept = {r for n in region.nodes if not self.is_scalar(n.name)
                for r in n.reads() if r in level and level[r] < level[n.name]}

        def store(name, unit):
            if name in L.stored or name in L.new_states:
                array, offset = L.value(name, kind)
                if kind == "step":
                    self.step_arrays.add(array)
                return [f"{_element(k.arg(array, offset), offset, unit)} = {name}"]
            return []

        for p in range(max(level.values(), default=0) + 1):
            here = [n for n in region.nodes if level[n.name] == p]
            sums = [n for n in region.nodes if n.is_reduction and level[n.name] == p + 1]
            for n in here:
                if self.is_scalar(n.name):
                    value = accumulator(n.name) if n.is_reduction else kernel_source(n.expr)
                    k.rows += [f"{n.name} = {value}", *store(n.name, "0")]
            k.rows += [f"{accumulator(n.name)} = T(0)" for n in sums]
            vectors = [n for n in here if not self.is_scalar(n.name)]
            names = {n.name for n in vectors}
            reads = sorted({r for n in vectors for r in n.reads()}
                           | {n.reads()[0] for n in sums})
            lines = [self.load(k, u, L.value(u, kind)) for u in reads
                     if u in region.inputs and not self.is_scalar(u)]
            lines += [f"{u} = {k.row_scratch('cache__' + u)}[j__]" for u in reads
                      if u in level and u not in names and not self.is_scalar(u)]
            lines += [f"{n.name} = {kernel_source(n.expr)}" for n in vectors]
            lines += [line for n in vectors for line in store(n.name, "j__")]
            lines += [f"{k.row_scratch('cache__' + n.name)}[j__] = {n.name}"
                      for n in vectors if n.name in kept]
            lines += [f"{accumulator(n.name)} += {n.reads()[0]}" for n in sums]
            k.unit_loop(lines)
        return self.call(k, kind)

    def forward(self) -> list[str]:
        L, lines = self.layout, []
        for kind, g in L.gemms:
            weights = [n.weight for n in g.nodes]
            rows = L.dim[g.operand]
            joined = (f"params[{weights[0]!r}]" if len(weights) == 1 else "np.concatenate(("
                      + ", ".join(f"params[{w!r}]" for w in weights)
                      + f"), axis=1, out=_empty(({rows}, {L.width(g)}), dtype))")
            lines.append(f"_w__{g.name} = {joined}")
        for name in L.stored:
            lines.append(f"_{name} = _empty((T, B, {L.dim[name]}), dtype)")
        for kind, g in L.gemms:
            if kind == "step":
                shape = "B" if g.name in L.transient else "T, B"
                lines.append(f"_{g.name} = _empty(({shape}, {L.width(g)}), dtype)")
        for kind, program in (("static", self.d.plan.static), ("step", self.d.plan.step)):
            body = []
            for stage in program:
                for g in stage.gemms:
                    operand = L.block(g.operand, kind)
                    if kind == "static":
                        out = f"_empty((T * B, {L.width(g)}), dtype)"
                        body.append(f"_{g.name} = np.matmul({operand}, _w__{g.name}, out={out})"
                                    f".reshape(T, B, {L.width(g)})")
                    else:
                        out, _ = L.value(g.nodes[0].name, "step")
                        body.append(f"_gemm({operand}[:n__], _w__{g.name}, {out}[:n__], False)")
                        self.step_arrays.add(out)
                for region in stage.regions:
                    body.append(self.fwd_kernel(kind, region))
            if kind == "step":
                loop = ["for t in range(T):", "    n__ = active__[t]"]
                loop += ["    " + line for line in body + self.clear_ended()]
                self.step_arrays = set()
                lines.append(self.step_function("forward__steps", loop, []))
            else:
                lines.extend(body)
        return lines

    def clear_ended(self) -> list[str]:
        """In a ragged batch (sorted by length), rows from `n__` on belong to sequences
        that have ended: zero them in every per-step array the loop writes. Outputs past
        a sequence's end are then zero, and no stale value reaches the GEMMs after the
        loop, which run over all rows."""
        arrays = sorted(a for a in self.step_arrays if "[t" in a)
        return ["if n__ < B:"] + [f"    {a}[n__:] = 0" for a in arrays] if arrays else []

    def step_function(self, name: str, body: list[str], returns: list[str]) -> str:
        """Turn the time loop into a Numba function (no Python between steps); return
        the line that calls it. Its parameters are the loop's free names."""
        tree = ast.parse("\n".join(body))
        names = sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
                       - {"t", "n__", "m__", "dyt__", "range", "np", "_gemm", "_copy_rows"}
                       - {"_" + k["name"] for k in self.kernels})
        args = ["T"] + [n for n in names if n != "T"]
        self.step_functions.append({"name": name, "args": args, "body": body,
                                    "returns": returns})
        call = f"_{name}({', '.join(args)})"
        return f"{', '.join(returns)} = {call}" if returns else call

    # ---- backward --------------------------------------------------------------
    def bwd_kernel(self, kind: str, region: Region, written: set) -> str:
        """The backward loops of `passes/derive.py`, levels P..0, in one kernel: per-row
        loads of scalars, then per loop the unit loop and the scalars after it; the
        last loop stores the adjoints of the region's inputs."""
        L = self.layout
        grad = (self.d.static if kind == "static" else self.d.step)[region.name]
        k = _Kernel(f"bwd__{region.name}", region.dim)
        for name in grad.reads:          # arguments in a stable order: forward values first
            k.arg(*L.value(name, kind))
        seeds = {}
        for name in grad.seeds:
            unit = "0" if self.is_scalar(name) else "j__"
            parts = []
            if name in written:          # adjoint from readers outside this kernel
                array, offset = L.adjoint(name, kind)
                parts.append(_element(k.arg(array, offset), offset, unit))
            if name == self.cell.output and kind == "step":   # d(loss)/d(output_t), folded in
                parts.append(_element(k.arg("dyt__", "0"), "0", unit))
            seeds[adjoint(name)] = f"{adjoint(name)} = {' + '.join(parts)}"
        k.rows += [self.load(k, n, L.value(n, kind)) for n in grad.reads if self.is_scalar(n)]
        k.rows += [seeds[adjoint(n)] for n in grad.seeds if self.is_scalar(n)]
        k.rows += [f"{n} = T(0)" for n in dict.fromkeys(
            n for loop in grad.loops for n, _ in loop.sums)]
        vectors = [n for n in grad.levels if not self.is_scalar(n)]
        for loop in grad.loops:
            exprs = [e for _, e in (*loop.temps, *loop.scratch, *loop.sums)]
            if loop.level == 0:
                exprs += [e for _, e in grad.grads]
            used = {s.name for e in exprs for s in e.free_symbols}
            every = loop.level == 0          # the last loop loads all it may need
            lines = [self.load(k, n, L.value(n, kind)) for n in grad.reads
                     if not self.is_scalar(n) and (every or n in used)]
            lines += [seeds[adjoint(n)] for n in grad.seeds if not self.is_scalar(n)
                      and grad.levels[n] == loop.level and (every or adjoint(n) in used)]
            lines += [f"{adjoint(n)} = {k.row_scratch('cache__' + adjoint(n))}[j__]"
                      for n in vectors if grad.levels[n] > loop.level and adjoint(n) in used]
            lines += [f"{n} = {kernel_source(e)}" for n, e in loop.temps]
            lines += [f"{k.row_scratch('cache__' + adjoint(n))}[j__] = {kernel_source(e)}"
                      for n, e in loop.scratch]
            lines += [f"{n} += {kernel_source(e)}" for n, e in loop.sums]
            after = []
            if loop.level == 0:
                for name, expr in grad.grads:
                    stores = self.input_grad(k, kind, region, name, expr, grad, written)
                    (after if self.is_scalar(name) else lines).extend(stores)
            k.unit_loop(lines)
            k.rows += [f"{n} = {kernel_source(e)}" for n, e in loop.scalars] + after
        return self.call(k, kind)

    def input_grad(self, k: _Kernel, kind: str, region: Region, name: str, expr, grad,
                   written: set) -> list[str]:
        """The lines that store (or add) the adjoint of one region input."""
        L = self.layout
        if name in L.params:
            return self.param_grad(k, kind, region, name, expr, grad)
        if name in L.member and L.member[name][0].name in L.shared:
            written.add(name)      # the same value is stored for the owning GEMM
            return []
        array, offset = L.adjoint(name, kind)
        target = _element(k.arg(array, offset), offset, "0" if self.is_scalar(name) else "j__")
        op = "+=" if name in written else "="
        written.add(name)
        if kind == "step":
            self.step_arrays.add(array)
        if name in L.member and len(L.member[name][0].nodes) > 1:
            return [k.store_block(target, op, kernel_source(expr))]
        return [f"{target} {op} {kernel_source(expr)}"]

    def param_grad(self, k: _Kernel, kind: str, region: Region, name: str, expr,
                   grad) -> list[str]:
        """A vector parameter's gradient is a sum over all steps and rows. Summing inside
        the kernel (`d[j] += ...`) would stop LLVM from vectorizing it, so the kernel only
        stores per-element terms and one reduction after the loop adds them up. When the
        term equals the adjoint of another input that this kernel alone writes to a
        [T, ...] buffer (a bias beside a GEMM output), that buffer is reduced instead."""
        L = self.layout
        for other, other_expr in grad.grads:
            if (other not in L.params and other_expr == expr and L.writers.get(other) == 1
                    and (other in L.member or other in L.inputs or other in L.static)):
                array, offset = L.adjoint(other, "static")
                self.reductions.setdefault(name, []).append((array, offset, L.dim[name]))
                return []
        buffer = f"_e__{name}__{region.name}"
        self.term_buffers.append(f"{buffer} = _empty((T, B, {L.dim[name]}), dtype)")
        array = L.at(buffer, L.dim[name], kind)
        if kind == "step":
            self.step_arrays.add(array)
        self.reductions.setdefault(name, []).append(
            (L.at(buffer, L.dim[name], "static"), None, L.dim[name]))   # the whole buffer
        return [f"{_element(k.arg(array, '0'), '0')} = {kernel_source(expr)}"]

    def gemm_transpose(self, g: Gemm, kind: str, written: set) -> str:
        """d(operand) (+)= d(output) @ W.T, with W.T made contiguous once per call
        (`_wt__`): OpenBLAS's AVX-512 kernels are much slower on a transposed operand
        (LSTM 64x256 step: 175 vs 113 us). Per step through BLAS (beta=1 accumulates
        without a temporary), after the loop as one numpy GEMM over all rows."""
        dm, _ = self.layout.adjoint(g.nodes[0].name, kind)
        target = self.layout.block(g.operand, kind, grad=True)
        accumulate = g.operand in written
        written.add(g.operand)
        if kind == "step":
            return f"_gemm({dm}[:n__], _wt__{g.name}, {target}[:n__], {accumulate})"
        if accumulate:
            return f"{target} += {dm} @ _wt__{g.name}"
        return f"np.matmul({dm}, _wt__{g.name}, out={target})"

    def backward(self) -> list[str]:
        loop, after = self.time_loop(), self.after_loop()
        return self.allocate_adjoints() + self.term_buffers + loop + after

    def allocate_adjoints(self) -> list[str]:
        L, lines = self.layout, []
        for name in sorted((L.inputs | set(L.static)) - L.constants):
            if name not in L.member:
                lines.append(f"_{adjoint(name)} = _empty((T, B, {L.dim[name]}), dtype)")
        for _, g in L.gemms:
            lines.append(f"_wt__{g.name} = _contiguous(_w__{g.name}.T)")
            if g.name not in L.shared:
                lines.append(f"_{adjoint(g.name)} = _empty((T, B, {L.width(g)}), dtype)")
        for s, dim in L.states.items():
            lines.append(f"_{adjoint(s)} = _empty((B, {dim}), dtype)")
            lines.append(f"_{adjoint(new_name(s))} = _empty((B, {dim}), dtype)")
            lines.append(f"_up__{s} = upstream__[{s!r}]")
        crossing = {seed for g in self.d.step.values() for seed in g.seeds}
        crossing.update(g.operand for kind, g in L.gemms if kind == "step")
        crossing = {n for n in crossing if L.writers.get(n, 0) > 0}   # someone writes it
        for n in sorted(crossing):
            if not (n in L.static or n in L.states or n in L.new_states or n in L.member):
                lines.append(f"_{adjoint(n)} = _empty((B, {L.dim[n]}), dtype)")
        return lines

    def time_loop(self) -> list[str]:
        L, out = self.layout, self.cell.output
        self.written = written = set(L.new_states)      # carried in from the step after
        # Sequences whose last step is t (rows m__:n__) take the final states' gradients.
        # (no `a if c else b` inside a call: Numba cannot compile a call with more than
        # 30 arguments, which Python passes as a tuple, when one of them branches)
        loop = ["n__ = active__[t]", "m__ = active__[t + 1]",
                "dyt__ = dy__[t] if has_dy__ else dy__[0]"]
        loop += [f"_copy_rows(_{adjoint(new_name(s))}, _up__{s}, m__, n__)" for s in L.states]
        if out in L.member:      # a GEMM product has no kernel to fold d_outputs into
            seed = L.block(out, "step", grad=True)
            loop += ["if has_dy__:", f"    {seed}[:] = dy__[t]", "else:", f"    {seed}[:] = 0"]
            written.add(out)
        for stage in reversed(self.d.plan.step):
            for region in stage.regions:
                loop.append(self.bwd_kernel("step", region, written))
            for g in stage.gemms:
                loop.append(self.gemm_transpose(g, "step", written))
        loop += self.clear_ended()
        for s in L.states:   # the adjoint of h_t becomes that of the previous step's h'
            if s not in written:
                loop.append(f"_{adjoint(s)}[:] = 0")
            loop.append(f"_{adjoint(s)}, _{adjoint(new_name(s))} = "
                        f"_{adjoint(new_name(s))}, _{adjoint(s)}")
        body = ["for t in range(T - 1, -1, -1):"] + ["    " + line for line in loop]
        # sequences of length 0: the initial states' gradients are the final states'
        body += [f"_copy_rows(_{adjoint(new_name(s))}, _up__{s}, active__[0], B)"
                 for s in L.states]
        finals = [f"_{adjoint(new_name(s))}" for s in L.states]
        return [self.step_function("backward__steps", body, finals)]

    def after_loop(self) -> list[str]:
        L, lines = self.layout, []
        # [T, ...] adjoints written inside the loop were written for every t.
        written = {n for n in self.written if n in L.inputs or n in L.static}
        for stage in reversed(self.d.plan.static):
            for region in stage.regions:
                lines.append(self.bwd_kernel("static", region, written))
            for g in stage.gemms:
                lines.append(self.gemm_transpose(g, "static", written))
        for x in sorted(L.inputs - L.constants - written):
            lines.append(f"_{adjoint(x)}[:] = 0")
        # Vector parameters: column sums over all rows, one contiguous sum per buffer.
        sums = {}
        for array, _, _ in (t for terms in self.reductions.values() for t in terms):
            if array not in sums:
                sums[array] = f"colsum{len(sums)}__"
                lines.append(f"{sums[array]} = {array}.sum(axis=0)")
        for p in self.cell.params:
            if len(p.shape) == 1:
                terms = [sums[a] if off is None else f"{sums[a]}[{off}:{off} + {dim}]"
                         for a, off, dim in self.reductions.get(p.name, [])]
                lines.append(f"_{adjoint(p.name)} = " + (" + ".join(terms) if terms
                                                        else f"np.zeros_like(_{p.name})"))
        done: set[str] = set()
        for _, g in L.gemms:         # weight gradients: one big GEMM per fused GEMM
            operand = L.block(g.operand, "static")
            if g.operand in L.states:
                operand = f"_{g.operand}[:T].reshape(T * B, {L.dim[g.operand]})"
            elif g.operand in L.new_states:
                s = L.new_states[g.operand]
                operand = f"_{s}[1:].reshape(T * B, {L.dim[s]})"
            dm = f"_{adjoint(L.shared.get(g.name, g.name))}.reshape(T * B, {L.width(g)})"
            rows = L.dim[g.operand]
            lines.append(f"gw__ = np.matmul({operand}.T, {dm}, out=_empty(({rows}, {L.width(g)}), dtype))")
            for node in g.nodes:
                _, offset = L.member[node.name]
                block = f"gw__[:, {offset}:{offset} + {node.dim}]"
                if node.weight in done:
                    lines.append(f"_{adjoint(node.weight)} += {block}")
                else:
                    done.add(node.weight)
                    lines.append(f"_{adjoint(node.weight)} = _contiguous({block})")
        return lines

    def output_expr(self) -> str:
        L, out = self.layout, self.cell.output
        if out in L.new_states:
            return f"_{L.new_states[out]}[1:]"
        if out in L.member:
            g, offset = L.member[out]
            return f"_contiguous(_{g.name}[..., {offset}:{offset} + {L.dim[out]}])"
        return f"_{out}"

    def saved(self) -> list[str]:
        """What the cache keeps for backward: stored values, states, the fused weights,
        and only those GEMM outputs that a backward expression reads (an LSTM's
        input projections are not kept: 40 % less saved memory, measured)."""
        L = self.layout
        read = {f"_{g.name}" for _, g in L.gemms if any(n.name in self.d.saved for n in g.nodes)}
        return sorted({f"_{n}" for n in L.stored} | {f"_{s}" for s in L.states}
                      | {f"_w__{g.name}" for _, g in L.gemms} | read)


def build_context(d: Derivation, *, version: str, source_name: str, equations: list[str],
                  spec_text: str, matmul_states: tuple[str, ...]) -> dict:
    cell = d.plan.cell
    emit = _Emitter(d)
    forward, backward = emit.forward(), emit.backward()
    return {
        "cell": cell,
        "version": version,
        "source_name": source_name,
        "equations": equations,
        "kernels": emit.kernels,
        "forward": forward,
        "backward": backward,
        "saved": emit.saved(),
        "output_expr": emit.output_expr(),
        "output_dim": cell.dim_of()[cell.output],
        "output_display": display_name(cell.output),
        "dims": tuple(cell.dims),
        "vector_params": [p.name for p in cell.params if len(p.shape) == 1],
        "fast_functions": fast_functions(d),
        "step_functions": emit.step_functions,
        "torch": cell.torch.as_dict() if cell.torch else None,
        "spec_lines": spec_text.split("\n"),
        "regularizers": (cell.regularizers or Regularizers())._asdict(),
        "matmul_states": matmul_states,
        "no_grad_inputs": tuple(v.name for v in cell.inputs if not v.grad),
    }


def fast_functions(d: Derivation) -> list[dict]:
    """The registered functions with a fast float32 form that the kernels call."""
    exprs = [n.expr for n in d.plan.cell.nodes if not n.is_matmul]
    for grad in (*d.static.values(), *d.step.values()):
        exprs += [e for _, e in grad.grads]
        for loop in grad.loops:
            exprs += [e for _, e in (*loop.temps, *loop.scratch, *loop.sums, *loop.scalars)]
    used = {f.func for e in exprs for f in e.atoms(CellFunction) if f.spec.fast32}
    return [{"name": f.spec.name, "doc": f.spec.doc, "fast32": f.spec.fast32,
             "exact": f.spec.kernel.format("x")} for f in sorted(used, key=lambda f: f.spec.name)]
