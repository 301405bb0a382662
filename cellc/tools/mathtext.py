"""Readable mathematics for `cellc show`, the docs and the graph: IR expressions printed in
Unicode (`σ(x @ W_xi + h @ W_hi + b_i)`, `c′ = f ⊙ c + i ⊙ g`) or LaTeX.

Names read as `naming.display` and `naming.latex` say: `new__h` is h′, `d__v` (an
adjoint) is ∂v, `t__3` (a shared subexpression) is t₃, `len__H` (a dimension's size) is
|H|, a lifted product `at__x__W` is x·W and a reduction `sum__v` is Σv.
"""
from __future__ import annotations

import sympy
from sympy.printing.latex import LatexPrinter
from sympy.printing.str import StrPrinter

from .. import naming
from ..ir.functions import CellFunction

_SUP = {2: "²", 3: "³", 4: "⁴"}
_SYMBOLS = {"sigmoid": "σ", "sqrt": "√"}
# A comparison prints as Iverson's bracket, [a ≥ b]: 1 where it holds, else 0
_UNICODE_OPS = {">": ">", ">=": "≥"}
_LATEX_OPS = {">": ">", ">=": r"\geq"}
unicode_name = naming.display
latex_name = naming.latex


class UnicodePrinter(StrPrinter):
    printmethod = "_unicode_text"        # not the classes' own _sympystr

    def _print_Symbol(self, expr):
        return unicode_name(expr.name)

    def _print_Pow(self, expr, rational=False):
        base, exponent = expr.args
        b = self.parenthesize(base, 60, strict=True)
        if exponent == sympy.S.Half:
            return f"√({self._print(base)})"
        if exponent.is_Integer and int(exponent) in _SUP:
            return b + _SUP[int(exponent)]
        if exponent == -1:
            return f"1/{b}"
        if exponent == -sympy.S.Half:
            return f"1/√({self._print(base)})"
        return f"{b}^{self.parenthesize(exponent, 60, strict=True)}"

    def _print_Function(self, expr):
        args = ", ".join(self._print(a) for a in expr.args)
        if isinstance(expr, CellFunction) and expr.spec.operator:     # a comparison
            a, b = (self.parenthesize(a, 40, strict=True) for a in expr.args)
            return f"[{a} {_UNICODE_OPS[expr.spec.operator]} {b}]"
        if isinstance(expr, CellFunction):
            return f"{_SYMBOLS.get(expr.spec.name, expr.spec.name)}({args})"
        return super()._print_Function(expr)

    def _print_Affine(self, expr):
        left = self.parenthesize(expr.args[0], 50, strict=False)
        return f"{left} @ {self._print(expr.args[1])}"

    def _print_RowSum(self, expr):
        return f"Σ({self._print(expr.args[0])})"

    def _print_RowMean(self, expr):
        return f"mean({self._print(expr.args[0])})"


class MathLatexPrinter(LatexPrinter):
    printmethod = "_cellc_latex"

    def _print_Symbol(self, expr, style="plain"):
        return latex_name(expr.name)

    def _print_Function(self, expr, exp=None):
        if isinstance(expr, CellFunction) and expr.spec.operator:
            a, b = (self._print(a) for a in expr.args)
            return rf"\left[{a} {_LATEX_OPS[expr.spec.operator]} {b}\right]"
        if isinstance(expr, CellFunction):
            name = {"sigmoid": r"\sigma", "tanh": r"\tanh", "exp": r"\exp", "log": r"\log",
                    "sqrt": r"\sqrt", "max": r"\max", "min": r"\min"}.get(
                expr.spec.name, rf"\operatorname{{{expr.spec.name}}}")
            args = ", ".join(self._print(a) for a in expr.args)
            if expr.spec.name == "sqrt":
                return rf"\sqrt{{{args}}}"
            out = rf"{name}\left({args}\right)"
            return rf"{out}^{{{exp}}}" if exp else out
        return super()._print_Function(expr, exp)

    def _print_Affine(self, expr, exp=None):
        left = self._print(expr.args[0])
        if not expr.args[0].is_Symbol:
            left = rf"\left({left}\right)"
        return f"{left} {self._print(expr.args[1])}"

    def _print_RowSum(self, expr, exp=None):
        return rf"\textstyle\sum\left({self._print(expr.args[0])}\right)"

    def _print_RowMean(self, expr, exp=None):
        return rf"\operatorname{{mean}}\left({self._print(expr.args[0])}\right)"


_UNICODE = UnicodePrinter({"order": "none"})
_LATEX = MathLatexPrinter({"order": "none", "mul_symbol": r" \odot "})
_LATEX._settings["mul_symbol_latex_numbers"] = r" \cdot "      # 1 \cdot 10^{-5}


def unicode(expr: sympy.Expr) -> str:
    return _UNICODE.doprint(expr).replace("*", " ⊙ ")


def number(value: sympy.Expr) -> str:
    """A constant as written (0.05, not SymPy's 0.0500000000000000)."""
    return repr(float(value)) if isinstance(value, sympy.Float) else unicode(value)


def latex(expr: sympy.Expr) -> str:
    return _LATEX.doprint(expr)


def equation(name: str, expr: sympy.Expr, *, tex: bool = False) -> str:
    """`name = expr` as text (Unicode) or LaTeX."""
    if tex:
        return f"{latex_name(name)} = {latex(expr)}"
    return f"{unicode_name(name)} = {unicode(expr)}"


__all__ = ["unicode", "latex", "equation", "unicode_name", "latex_name"]
