"""Print SymPy expressions as Numba source for one element of a fused kernel.

Every literal is wrapped as `T(...)`, where `T` is the kernel's dtype (`a.dtype.type`),
because a bare `0.5` or `1` would silently promote a float32 kernel to float64.
Integer powers become products, registered functions expand to their `kernel`
source (`functions.py`), and anything else is refused: the printer never guesses.
"""
from __future__ import annotations

import sympy
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

from ...ir.functions import CellFunction
from ...ir.cell import SIZE_PREFIX, is_size


class KernelPrinter(StrPrinter):
    def emptyPrinter(self, expr):
        raise TypeError(f"cellc cannot print {type(expr).__name__} in a kernel")

    def _print_Symbol(self, expr):
        if is_size(expr.name):              # the size of a dimension, an int argument
            return f"T({expr.name[len(SIZE_PREFIX):]})"
        return expr.name

    def _print_Integer(self, expr):
        return f"T({int(expr)})"

    _print_Zero = _print_One = _print_NegativeOne = _print_Integer

    def _print_Rational(self, expr):
        return f"(T({expr.p}) / T({expr.q}))"

    _print_Half = _print_Rational

    def _print_Float(self, expr):
        return f"T({float(expr)!r})"

    def _print_Pow(self, expr, rational=False):
        base, exponent = expr.args
        b = self.parenthesize(base, PRECEDENCE["Mul"], strict=False)
        if exponent == sympy.S.Half:
            return f"np.sqrt({self._print(base)})"
        if exponent == -sympy.S.Half:
            return f"(T(1) / np.sqrt({self._print(base)}))"
        if exponent.is_Integer and 1 <= abs(int(exponent)) <= 4:
            product = "*".join([b] * abs(int(exponent)))
            return product if exponent > 0 else f"(T(1) / ({product}))"
        return f"{self.parenthesize(base, PRECEDENCE['Pow'], strict=True)} ** {self._print(exponent)}"

    def _print_Function(self, expr):
        if not isinstance(expr, CellFunction):
            return self.emptyPrinter(expr)
        if expr.spec.fast32:      # dtype-dispatched helper in the generated module
            return f"_{expr.spec.name}({', '.join(self._print(a) for a in expr.args)})"
        args = [a.name if a.is_Symbol else f"({self._print(a)})" for a in expr.args]
        return "(" + expr.spec.kernel.format(*args) + ")"

    def _print_Mul(self, expr):
        # Negative coefficients print as a leading minus; the rest as StrPrinter does,
        # but with typed literals (StrPrinter would emit a bare `1` in `1/x`).
        coeff, rest = expr.as_coeff_Mul()
        if coeff.is_negative:
            return "-" + self.parenthesize(-expr, PRECEDENCE["Mul"], strict=False) \
                if coeff != -1 else "-" + self.parenthesize(rest, PRECEDENCE["Mul"], strict=False)
        numer, denom = [], []
        for factor in sympy.Mul.make_args(expr):
            if factor.is_Pow and factor.exp.is_Integer and factor.exp < 0:
                denom.append(factor.base ** -factor.exp)
            elif factor.is_Rational and not factor.is_Integer:
                if factor.p != 1:
                    numer.append(sympy.Integer(factor.p))
                denom.append(sympy.Integer(factor.q))
            else:
                numer.append(factor)
        top = "*".join(self.parenthesize(f, PRECEDENCE["Mul"], strict=False) for f in numer) or "T(1)"
        if not denom:
            return top
        bottom = "*".join(self.parenthesize(f, PRECEDENCE["Mul"], strict=False) for f in denom)
        return f"{top} / ({bottom})" if len(denom) > 1 or not denom[0].is_Atom else f"{top} / {bottom}"


_PRINTER = KernelPrinter({"order": "none"})


def kernel_source(expr: sympy.Expr) -> str:
    """Numba source for `expr`, with dtype-preserving literals."""
    return _PRINTER.doprint(expr)
