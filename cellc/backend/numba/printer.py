"""Print the program tree as Python: Numba for the kernels and time loops, NumPy for the
drivers. The one place that knows the target's syntax.

Every float literal inside a kernel is printed as `real(...)`, where `real` is the
kernel's dtype (`a.dtype.type`): a bare `0.5` or `1` would silently promote a float32
kernel to float64. Integer powers become products and half-integer powers one square
root (`x**(3/2)` is `x*np.sqrt(x)`); registered functions call the runtime's helper of the
same name (`_sigmoid`); indices and sizes print as plain integers (`3*H + j__`).
Anything the printer does not know is refused with an internal error that names it: the
printer never guesses.
"""
from __future__ import annotations

import math

import sympy
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

from ... import naming
from ...ir import weights
from ...ir.cell import is_size
from ...ir.functions import CellFunction
from .. import tree

INDENT = "    "
_CHUNK_SPAN = (sympy.Symbol(naming.STOP, integer=True, nonnegative=True)
               - sympy.Symbol(naming.FIRST, integer=True, nonnegative=True),
               sympy.Symbol(naming.SPAN, integer=True, positive=True))


class _IndexPrinter(StrPrinter):
    """Integer expressions: indices, offsets, sizes, shapes."""

    def emptyPrinter(self, expr):
        raise TypeError(f"cellc cannot print {type(expr).__name__} ({expr}) as an index")

    def _print_Mod(self, expr):
        a, b = expr.args
        return f"{self.parenthesize(a, PRECEDENCE['Mul'], strict=True)} % {self._print(b)}"

    def _print_Element(self, expr):
        return _element(expr, self)

    def _print_Add(self, expr, order=None):
        """Terms as StrPrinter orders them, but those with a minus sign last:
        `t1__ - t0__`, `T - 1`."""
        terms = sorted(self._as_ordered_terms(expr, order=order),
                       key=lambda term: term.could_extract_minus_sign())
        text = self._print(terms[0])
        for term in terms[1:]:
            if term.could_extract_minus_sign():
                text += f" - {self.parenthesize(-term, PRECEDENCE['Add'])}"
            else:
                text += f" + {self.parenthesize(term, PRECEDENCE['Add'])}"
        return text

    def _print_Min(self, expr):
        return f"min({', '.join(self._print(a) for a in expr.args)})"

    def _print_Max(self, expr):
        return f"max({', '.join(self._print(a) for a in expr.args)})"

    def _print_Integer(self, expr):
        return str(int(expr))


class _RealPrinter(StrPrinter):
    """Float expressions inside kernels, with literals in the kernel's dtype."""

    def emptyPrinter(self, expr):
        raise TypeError(f"cellc cannot print {type(expr).__name__} ({expr}) in a kernel")

    def _print_Symbol(self, expr):
        if is_size(expr.name):              # the size of a dimension, an int argument
            return f"{naming.REAL}({naming.code(naming.parse(expr.name).parts[0])})"
        return naming.code(expr.name)       # a value of the spec, or a kernel's own local

    def _print_Element(self, expr):
        return _element(expr, _INDEX)

    def _print_Integer(self, expr):
        n = int(expr)
        return f"{naming.REAL}({n if abs(n) < 2 ** 53 else float(n)!r})"

    _print_Zero = _print_One = _print_NegativeOne = _print_Integer

    def _print_Rational(self, expr):
        return f"({self._print(sympy.Integer(expr.p))} / {self._print(sympy.Integer(expr.q))})"

    _print_Half = _print_Rational

    def _print_Float(self, expr):
        if not math.isfinite(float(expr)):      # the front end refuses these: a bug here
            raise TypeError(f"the constant {expr} cannot be printed as a finite float")
        return f"{naming.REAL}({float(expr)!r})"

    def _print_Pow(self, expr, rational=False):
        base, exponent = expr.args
        if exponent.is_Rational and exponent < 0:
            return self._print_Mul(expr)           # a quotient
        if exponent.is_Rational and exponent.q in (1, 2) and 1 <= abs(exponent.p) <= 8:
            whole, half = divmod(abs(exponent.p), 2) if exponent.q == 2 else (abs(exponent.p), 0)
            b = self.parenthesize(base, PRECEDENCE["Mul"], strict=False)
            return "*".join([b] * whole + ([f"np.sqrt({self._print(base)})"] if half else []))
        return f"{self.parenthesize(base, PRECEDENCE['Pow'], strict=True)} ** {self._print(exponent)}"

    def _print_Function(self, expr):
        if not isinstance(expr, CellFunction):
            return self.emptyPrinter(expr)
        return f"_{expr.spec.name}({', '.join(self._print(a) for a in expr.args)})"

    def _print_Mul(self, expr):
        # Negative coefficients print as a leading minus; the rest as StrPrinter does,
        # but with typed literals (StrPrinter would emit a bare `1` in `1/x`).
        coeff, rest = expr.as_coeff_Mul()
        if coeff.is_negative:
            return "-" + self.parenthesize(-expr, PRECEDENCE["Mul"], strict=False) \
                if coeff != -1 else "-" + self.parenthesize(rest, PRECEDENCE["Mul"], strict=False)
        numer, denom = [], []
        for factor in sympy.Mul.make_args(expr):
            if factor.is_Pow and factor.exp.is_Rational and factor.exp < 0:
                denom.append(factor.base if factor.exp == -1
                             else sympy.Pow(factor.base, -factor.exp, evaluate=False))
            elif factor.is_Rational and not factor.is_Integer:
                if factor.p != 1:
                    numer.append(sympy.Integer(factor.p))
                denom.append(sympy.Integer(factor.q))
            else:
                numer.append(factor)
        top = "*".join(self.parenthesize(f, PRECEDENCE["Mul"], strict=False)
                       for f in numer) or self._print(sympy.S.One)
        if not denom:
            return top
        if len(denom) == 1:
            d = denom[0]
            bare = (d.is_Atom or isinstance(d, (tree.Element, CellFunction))
                    or (d.is_Pow and d.exp == sympy.S.Half))
            return f"{top} / {self._print(d)}" if bare else f"{top} / ({self._print(d)})"
        bottom = "*".join(self.parenthesize(f, PRECEDENCE["Mul"], strict=False) for f in denom)
        return f"{top} / ({bottom})"


_INDEX = _IndexPrinter()
_REAL = _RealPrinter({"order": "none"})


def _element(expr, index_printer) -> str:
    return f"{expr.array}[{', '.join(index_printer.doprint(i) for i in expr.index)}]"


def index(expr) -> str:
    """An integer expression: `3*H + j__`, `t % 2`."""
    return _INDEX.doprint(expr if isinstance(expr, sympy.Basic) else sympy.Integer(expr))


_KNOWN = (sympy.Symbol, sympy.Number, sympy.Add, sympy.Mul, sympy.Pow, CellFunction,
          tree.Element)


def real(expr) -> str:
    """A float expression inside a kernel, its literals in the kernel's dtype. Anything
    but numbers, symbols, + * ** and cellc's functions is refused."""
    for sub in sympy.preorder_traversal(expr):
        number = isinstance(sub, sympy.Number)
        if not isinstance(sub, _KNOWN) or (number and not (sub.is_finite and sub.is_real)):
            raise TypeError(f"cellc cannot print {type(sub).__name__} ({sub}) in a kernel")
    return _REAL.doprint(expr)


def comment(text: str) -> str:
    """A comment line; anything but printable ASCII is escaped, so spec text can
    neither end the line nor hide characters from a reader."""
    safe = "".join(ch if " " <= ch <= "~" else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)
    return f"# {safe}"


def shape(dims: tuple) -> str:
    items = [index(d) for d in dims]
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def view(v: tree.View) -> str:
    """`_x.reshape(B*T, I)`, `_h[t + 1]`, `_mm__h[:n__]`, `_d__w__x[:, H:2*H]`, ..."""
    array, text = v.array, v.array.name
    rank = len(array.shape)
    if v.step is not None:
        text += f"[{index(v.step)}]"
        rank -= 1
    elif v.steps is not None:
        start, stop = v.steps
        if (start, stop) != (sympy.S.Zero, array.shape[0]):
            text += f"[{'' if start == 0 else index(start)}:" \
                    f"{'' if stop == array.shape[0] else index(stop)}]"
        if v.flat:
            span = stop - start
            if span == _CHUNK_SPAN[0]:          # the steps of one chunk
                span = _CHUNK_SPAN[1]
            rows = sympy.Mul(span, *array.shape[1:-1])
            text += f".reshape({index(rows)}, {index(array.shape[-1])})"
            rank -= 1
    if v.rows is not None:
        text += f"[:{index(v.rows)}]"
    if v.cols is not None:
        offset, width = v.cols
        cols = f"{index(offset) if offset != 0 else ''}:{index(offset + width)}"
        text += {1: f"[{cols}]", 2: f"[:, {cols}]"}.get(rank, f"[..., {cols}]")
    if v.transposed:
        text += ".T"
    return text


def value(x) -> str:
    """A call's argument or a statement's operand: a view, an expression, a tuple."""
    if isinstance(x, tree.View):
        return view(x)
    if isinstance(x, tree.Argument):         # a scalar parameter is 0-d to the caller
        scalar = x.array.shape == (sympy.S.One,)
        return f"{x.source}[{x.key!r}]" + (".reshape(1)" if scalar else "")
    if isinstance(x, tuple):
        items = [value(i) for i in x]
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    return index(x)


class _ScalarPrinter(StrPrinter):
    """A weight expression's scalars: numbers as Python writes them, parameters by array."""

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Rational(self, expr):
        return f"({expr.p} / {expr.q})"


def matrix(m, lib: str = "np") -> str:
    """A weight expression (ir/weights.py) over arrays, as NumPy (or as the array library
    `lib`, whose `eye` and `sum` work as NumPy's)."""
    def operand(part):
        text = matrix(part, lib)
        atomic = isinstance(part, (weights.Ref, weights.Eye, weights.Total)) or (
            isinstance(part, weights.Transposed) and isinstance(part.a, weights.Ref))
        return text if atomic else f"({text})"

    if isinstance(m, weights.Ref):
        return m.name
    if isinstance(m, weights.Eye):
        return f"{lib}.eye({naming.code(m.dim)}, dtype=dtype)"
    if isinstance(m, weights.Transposed):
        return f"{operand(m.a)}.T"
    if isinstance(m, weights.Plus):
        if isinstance(m.b, weights.Scaled) and m.b.scale.could_extract_minus_sign():
            return f"{matrix(m.a, lib)} - {matrix(weights.scaled(-m.b.scale, m.b.a), lib)}"
        return f"{matrix(m.a, lib)} + {matrix(m.b, lib)}"
    if isinstance(m, weights.Scaled):
        if m.scale == -1:
            return f"-{operand(m.a)}"
        scale = _ScalarPrinter().doprint(m.scale)
        return f"{scale if m.scale.is_Atom else f'({scale})'} * {operand(m.a)}"
    if isinstance(m, weights.Hadamard):
        return f"{operand(m.a)} * {operand(m.b)}"
    if isinstance(m, weights.Product):
        return f"{operand(m.a)} @ {operand(m.b)}"
    if isinstance(m, weights.Total):
        return f"{lib}.sum({matrix(m.a, lib)})"
    raise TypeError(f"cellc's Numba printer cannot print the weight expression {m!r}")


def _grouped(pairs) -> list:
    """(param, value) pairs with the values of one group gathered into a tuple, in the
    order the groups first appear: what a call passes."""
    out, where = [], {}
    for param, v in pairs:
        if param.group in naming.GROUPS:
            if param.group not in where:
                where[param.group] = len(out)
                out.append((naming.GROUPS[param.group], []))
            out[where[param.group]][1].append(v)
        else:
            out.append((param.name, v))
    return [(name, tuple(v) if isinstance(v, list) else v) for name, v in out]


# ---- statements --------------------------------------------------------------------
class Statements:
    """Drivers' and time loops' statements as Python over NumPy arrays, one method per
    node type (named after it). A target whose drivers run over other arrays (CUDA's)
    overrides the methods that name a library; the rest is plain Python they share."""

    lib = "np"        # the array library a weight expression's `eye` and `sum` come from

    def __init__(self, loops=()):
        """`loops`: the time loops' names (a target may call them differently)."""

    def __call__(self, body, depth: int = 0) -> list[str]:
        lines = []
        for s in body:
            lines += [INDENT * depth + line for line in self.statement(s)]
        return lines

    def statement(self, s) -> list[str]:
        method = getattr(self, type(s).__name__, None)
        if method is None:
            raise TypeError(f"cellc's {type(self).__name__} cannot print a {type(s).__name__}: {s}")
        return method(s)

    def Assign(self, s):
        target = real(s.target) if isinstance(s.target, tree.Element) else naming.code(s.target.name)
        integer = isinstance(s.target, sympy.Symbol) and s.target.is_integer
        return [f"{target} {'+=' if s.accumulate else '='} "
                f"{index(s.value) if integer else real(s.value)}"]

    def Comment(self, s):
        return [comment(s.text)]

    def Loop(self, s):
        if s.reverse:
            head = f"range({index(s.stop - 1)}, {index(s.start - 1)}, -1)"
        elif s.stride != 1:
            head = f"range({index(s.start)}, {index(s.stop)}, {index(s.stride)})"
        else:
            head = f"range({index(s.stop)})" if s.start == 0 else \
                f"range({index(s.start)}, {index(s.stop)})"
        return [f"for {s.index.name} in {head}:"] + self(s.body, 1)

    def If(self, s):
        lines = [f"if {index(s.condition)}:"] + self(s.body, 1)
        return lines + (["else:"] + self(s.orelse, 1) if s.orelse else [])

    def Bind(self, s):
        return [f"{s.name} = {value(s.value)}"]

    def Argument(self, s):
        return [f"{s.array.name} = {value(s)}"]

    def MatrixValue(self, s):        # a weight expression, or its pullback
        if s.accumulate:
            return [f"{s.out.name} += {matrix(s.value, self.lib)}"]
        return [f"{s.out.name} = np.array({matrix(s.value)}, dtype, order=\"C\")"]

    def SetView(self, s):
        return [f"{view(s.dst)}[:] = {value(s.src)}"]

    def Alloc(self, s):
        return [f"{s.array.name} = _empty({shape(s.array.shape)}, dtype)"]

    def Gemm(self, s):
        return [f"_gemm({view(s.a)}, {view(s.b)}, {view(s.out)}, {s.accumulate})"]

    def Call(self, s):
        args = ", ".join(value(v) for _, v in _grouped(s.args))
        call = f"{s.function}({args})"
        return [f"{', '.join(s.results)} = {call}" if s.results else call]

    def Fill(self, s):
        rows = f"{index(s.start)}:" if s.start is not None else ":"
        return [f"{view(s.view)}[{rows}] = {index(s.value)}"]

    def CopyRows(self, s):
        return [f"_copy_rows({view(s.dst)}, {view(s.src)}, {index(s.start)}, {index(s.stop)})"]

    def Swap(self, s):
        return [f"{s.a}, {s.b} = {s.b}, {s.a}"]

    def Concat(self, s):
        if len(s.parts) == 1:
            return [f"{s.out.name} = {view(s.parts[0])}"]
        parts = ", ".join(view(p) for p in s.parts)
        return [f"{s.out.name} = np.concatenate(({parts}), axis=1, "
                f"out=_empty({shape(s.out.shape)}, dtype))"]

    def Transpose(self, s):
        return [f"{s.out.name} = _contiguous({view(s.src)}.T)"]

    def Copy(self, s):
        if s.accumulate:
            return [f"{s.out.name} += {view(s.src)}"]
        return [f"{s.out.name} = _contiguous({view(s.src)})"]

    def AddColumnSums(self, s):
        return [f"_add_column_sums({view(s.out)}, {view(s.src)})"]

    def ColumnSums(self, s):
        return [f"{s.out.name} = {view(s.src)}.sum(axis=0)"]

    def SumOf(self, s):
        if not s.terms:
            return [f"{s.out.name} = np.zeros_like({s.like.name})"]
        return [f"{s.out.name} = {' + '.join(view(t) for t in s.terms)}"]


statements = Statements()


def function(f: tree.Function, inlined: bool = False, loops=()) -> str:
    """A kernel or a time loop, jitted, with its grouped parameters unpacked first.

    `inlined`: a kernel that a time loop calls is inlined there by Numba (`_KERNEL`).
    Compiled on its own, each such kernel paid a second LLVM pipeline and machine-code
    pass, a fifth of an LSTM's cold compile, for the same machine code."""
    groups = _grouped((p, p.name) for p in f.params)
    decorator = "@nb.njit(**_KERNEL)" if inlined else "@nb.njit(**_JIT)"
    lines = [decorator, f"def {f.name}({', '.join(name for name, _ in groups)}):"]
    if f.doc:
        lines.append(f'{INDENT}"""{f.doc}"""')
    for name, members in groups:
        if isinstance(members, tuple):
            targets = ", ".join(members) + ("," if len(members) == 1 else "")
            lines.append(f"{INDENT}{targets} = {name}")
    if f.kind == "kernel":
        lines.append(f"{INDENT}{naming.REAL} = {f.dtype_of}.dtype.type")
        lines += [f"{INDENT}{name} = np.empty({index(width)}, {f.dtype_of}.dtype)"
                  for name, width in f.scratch]
    lines += statements(f.body, 1)
    if f.returns:
        lines.append(f"{INDENT}return {', '.join(f.returns)}")
    return "\n".join(lines)
