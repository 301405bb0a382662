"""Print the program tree for CUDA: kernels as `numba.cuda` kernels, the time loops and
drivers as Python over the call's array library (`xp`: torch, CuPy, or NumPy in the
simulator), whose GEMMs run on cuBLAS.

The tree is the CPU back end's, unchanged; only the mapping of its loops differs. A
kernel's loop over rows and its loops over units become threads:

- A kernel whose units never meet (no sum over a row) runs a thread per (row, unit).
  Each thread runs the row's statements for its own unit, in order, so a row of scratch
  (a value one unit loop keeps for the next) is the thread's own local, and a per-row
  value is computed by each thread of the row alike; only the first thread of a row
  stores a per-row value.
- A kernel that sums over a row (layer norm's mean and variance) runs a block per row, a
  thread per unit, striding when the row is wider than the block. A running sum becomes
  each thread's partial sum, added across the block (`_row_sum`, in shared memory) after
  its unit loop; rows of scratch are global memory [count, rows, width], which the
  launcher allocates.

Expressions print as on the CPU (`numba/printer.py`): literals in the kernel's dtype
(`real(0.5)`), the registered functions as the runtime's device functions of the same
name, half-integer powers through `_sqrt` (NumPy's ufuncs do not run in CUDA kernels).
"""
from __future__ import annotations

import sympy

from ... import naming
from .. import tree
from ..numba import printer as cpu
from ..numba.printer import INDENT, _grouped, index, real, shape, value, view

LANE, FLAT, SUMS, SCRATCH, XP = naming.LANE, naming.FLAT, naming.SUMS, naming.SCRATCH, naming.LIBRARY
kernel_name = naming.device_kernel


class Statements(cpu.Statements):
    """Drivers' and time loops' statements over the call's array library `xp`."""

    lib = XP

    def __init__(self, loops=()):
        self.loops = set(loops)       # the time loops, which take `xp` first

    def MatrixValue(self, s):
        if s.accumulate:
            return super().MatrixValue(s)
        return [f"{s.out.name} = {XP}.contiguous({cpu.matrix(s.value, XP)})"]

    def Alloc(self, s):
        return [f"{s.array.name} = {XP}.empty({shape(s.array.shape)}, dtype)"]

    def Gemm(self, s):
        return [f"{XP}.gemm({view(s.a)}, {view(s.b)}, {view(s.out)}, {s.accumulate})"]

    def Call(self, s):
        if s.function not in self.loops:
            return super().Call(s)
        args = ", ".join([XP] + [value(v) for _, v in _grouped(s.args)])
        call = f"{s.function}({args})"
        return [f"{', '.join(s.results)} = {call}" if s.results else call]

    def Concat(self, s):
        if len(s.parts) == 1:
            return super().Concat(s)
        return [f"{s.out.name} = {XP}.concat(({', '.join(view(p) for p in s.parts)}))"]

    def Transpose(self, s):
        return [f"{s.out.name} = {XP}.contiguous({view(s.src)}.T)"]

    def Copy(self, s):
        if s.accumulate:
            return super().Copy(s)
        return [f"{s.out.name} = {XP}.contiguous({view(s.src)})"]

    def AddColumnSums(self, s):
        return [f"_add_column_sums({XP}, {view(s.out)}, {view(s.src)})"]

    def ColumnSums(self, s):
        return [f"{s.out.name} = {XP}.column_sums({view(s.src)})"]

    def SumOf(self, s):
        if not s.terms:
            return [f"{s.out.name} = {XP}.zeros_like({s.like.name})"]
        return super().SumOf(s)


# ---- kernels ---------------------------------------------------------------------------
_KERNEL = Statements()       # a kernel's lines: assignments and comments, as on the CPU
class _Shape:
    """What a kernel's row body holds: its unit loops' width, its running sums (symbols a
    unit loop adds to) and its rows of scratch."""

    def __init__(self, f: tree.Function):
        (rows,) = f.body
        assert isinstance(rows, tree.Loop) and rows.kind == "rows", f.name
        self.row = rows.index
        self.body = rows.body
        loops = [s for s in self.body if isinstance(s, tree.Loop)]
        assert all(loop.kind == "units" for loop in loops), f.name
        widths = {loop.stop for loop in loops}
        assert len(widths) <= 1, f"{f.name}: unit loops of several widths {widths}"
        self.width = widths.pop() if widths else sympy.S.One
        self.unit = loops[0].index if loops else sympy.Symbol(naming.UNIT, integer=True)
        self.scratch = [name for name, _ in f.scratch]
        self.sums = {id(loop): [s.target for s in loop.body if isinstance(s, tree.Assign)
                                and s.accumulate and isinstance(s.target, sympy.Symbol)]
                     for loop in loops}
        self.reduces = any(self.sums.values())


def function(f: tree.Function, inlined: bool = False, loops=()) -> str:
    """A kernel (its `numba.cuda` kernel and the launcher the time loops call) or a time
    loop (plain Python). `inlined` is the CPU printer's and means nothing here."""
    if f.kind == "steps":
        return _steps(f, loops)
    shaped = _Shape(f)
    return _kernel(f, shaped) + "\n\n\n" + _launcher(f, shaped)


def _steps(f: tree.Function, loops) -> str:
    groups = _grouped((p, p.name) for p in f.params)
    lines = [f"def {f.name}({', '.join([XP] + [name for name, _ in groups])}):"]
    lines += _unpack(groups)
    lines += Statements(loops)(f.body, 1)
    if f.returns:
        lines.append(f"{INDENT}return {', '.join(f.returns)}")
    return "\n".join(lines)


def _unpack(groups) -> list[str]:
    lines = []
    for name, members in groups:
        if isinstance(members, tuple):
            targets = ", ".join(members) + ("," if len(members) == 1 else "")
            lines.append(f"{INDENT}{targets} = {name}")
    return lines


def _params(f: tree.Function, shaped: _Shape) -> list[str]:
    names = [name for name, _ in _grouped((p, p.name) for p in f.params)]
    return names + ([SCRATCH] if shaped.reduces and shaped.scratch else [])


def _kernel(f: tree.Function, shaped: _Shape) -> str:
    groups = _grouped((p, p.name) for p in f.params)
    lines = ["@cuda.jit(**_CUDA_JIT)",
             f"def {kernel_name(f.name)}({', '.join(_params(f, shaped))}):"]
    if f.doc:
        lines.append(f'{INDENT}"""{f.doc}"""')
    lines += _unpack(groups)
    lines.append(f"{INDENT}{naming.REAL} = {f.dtype_of}.dtype.type")
    row, unit, width = shaped.row.name, shaped.unit.name, index(shaped.width)
    if shaped.reduces:
        lines += [f"{INDENT}{row} = cuda.blockIdx.x",
                  f"{INDENT}{LANE} = cuda.threadIdx.x",
                  f"{INDENT}{SUMS} = cuda.shared.array(_ROW_THREADS, {f.dtype_of}.dtype)"]
        lines += _by_rows(shaped, 1)
    else:
        lines += [f"{INDENT}{FLAT} = cuda.grid(1)",
                  f"{INDENT}{row} = {FLAT} // {_paren(width)}",
                  f"{INDENT}{unit} = {FLAT} - {row}*{_paren(width)}",
                  f"{INDENT}if {row} < {naming.ROWS}:"]
        lines += _by_units(shaped, 2)
    return "\n".join(lines)


def _paren(text: str) -> str:
    return text if text.isidentifier() or text.isdigit() else f"({text})"


def _by_units(shaped: _Shape, depth: int) -> list[str]:
    """A row's statements for one unit (a thread per (row, unit)): unit loops unrolled to
    their one unit, rows of scratch as locals, per-row stores by the row's first thread."""
    local = {tree.Element.of(name, (shaped.unit,)): sympy.Symbol(name) for name in shaped.scratch}
    lines = []
    for s in shaped.body:
        for line in (s.body if isinstance(s, tree.Loop) else (s,)):
            if isinstance(line, tree.Assign):
                line = tree.Assign(line.target.xreplace(local), line.value.xreplace(local),
                                   line.accumulate)
            text = _KERNEL.statement(line)
            if isinstance(line, tree.Assign) and isinstance(line.target, tree.Element) \
                    and not isinstance(s, tree.Loop):
                text = [f"if {shaped.unit.name} == 0:"] + [INDENT + t for t in text]
            lines += [INDENT * depth + t for t in text]
    return lines


def _by_rows(shaped: _Shape, depth: int) -> list[str]:
    """A row's statements for a block of threads (a block per row): unit loops strided
    over the block, running sums added across it after their loop, per-row stores by
    the block's first thread, rows of scratch in global memory."""
    row = shaped.row
    where = {tree.Element.of(name, (shaped.unit,)):
             tree.Element.of(SCRATCH, (k, row, shaped.unit)) for k, name in enumerate(shaped.scratch)}
    pad = INDENT * depth
    lines = []
    for s in shaped.body:
        if not isinstance(s, tree.Loop):
            text = _KERNEL.statement(s)
            if isinstance(s, tree.Assign) and isinstance(s.target, tree.Element):
                text = [f"if {LANE} == 0:"] + [INDENT + t for t in text]
            lines += [pad + t for t in text]
            continue
        sums = list(dict.fromkeys(shaped.sums[id(s)]))
        for total in sums:      # the first thread carries the sum so far, the others add
            lines.append(f"{pad}if {LANE} != 0:")
            lines.append(f"{pad}{INDENT}{naming.code(total.name)} = {real(sympy.S.Zero)}")
        lines.append(f"{pad}for {shaped.unit.name} in range({LANE}, {index(shaped.width)}, "
                     f"cuda.blockDim.x):")
        for line in s.body:
            if isinstance(line, tree.Assign):
                line = tree.Assign(line.target.xreplace(where), line.value.xreplace(where),
                                   line.accumulate)
            lines += [pad + INDENT + t for t in _KERNEL.statement(line)]
        for total in sums:
            name = naming.code(total.name)
            lines.append(f"{pad}{name} = _row_sum({name}, {SUMS})")
    return lines


def _launcher(f: tree.Function, shaped: _Shape) -> str:
    """The function the time loops call: the grid for this many rows, then the kernel
    (nothing when no row runs: a grid of no blocks is an error)."""
    params = [name for name, _ in _grouped((p, p.name) for p in f.params)]
    width = index(shaped.width)
    lines = [f"def {f.name}({', '.join(params)}):", f"{INDENT}if {naming.ROWS} > 0:"]
    pad = INDENT * 2
    if shaped.reduces:
        lines.append(f"{pad}grid, block = _row_launch({naming.ROWS}, {width})")
        if shaped.scratch:
            group = next(p.group for p in f.params if p.name == f.dtype_of)
            members = [p.name for p in f.params if p.group == group]
            like = f"{naming.GROUPS[group]}[{members.index(f.dtype_of)}]"
            lines.append(f"{pad}{SCRATCH} = _scratch({like}, {len(shaped.scratch)}, "
                         f"{naming.ROWS}, {width})")
    else:
        lines.append(f"{pad}grid, block = _unit_launch({naming.ROWS}, {width})")
    lines.append(f"{pad}{kernel_name(f.name)}[grid, block](*_arguments({', '.join(_params(f, shaped))}))")
    return "\n".join(lines)
