"""Readable mathematics for `cellc show`, the docs and the graph: IR expressions printed in
Unicode (`σ(x @ W_xi + h @ W_hi + b_i)`, `c′ = f ⊙ c + i ⊙ g`) or LaTeX.

IR names are mapped back to what a reader expects: `h__new` is h′, `d__v` (an adjoint)
is ∂v, `sum__v` (its sum over the units of a row) is Σ∂v, `t__3` (a CSE temporary) is t₃, `len__H` (a dimension's size) is |H|, a lifted
product `x__W` is x·W and a lifted reduction `v__sum` is Σv.
"""
from __future__ import annotations

import re

import sympy
from sympy.printing.latex import LatexPrinter
from sympy.printing.str import StrPrinter

from ..ir.functions import CellFunction
from ..ir.cell import NEW_SUFFIX, SIZE_PREFIX

_SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
_SUP = {2: "²", 3: "³", 4: "⁴"}
_SYMBOLS = {"sigmoid": "σ", "sqrt": "√"}


def unicode_name(name: str) -> str:
    """How IR name `name` reads in a formula."""
    if name.startswith("d__"):
        return "∂" + unicode_name(name[3:])
    if name.startswith("sum__"):
        return "Σ∂" + unicode_name(name[5:])
    if name.startswith(SIZE_PREFIX):
        return f"|{name[len(SIZE_PREFIX):]}|"
    if re.fullmatch(r"t__\d+", name):
        return "t" + name[3:].translate(_SUB)
    if name.endswith(NEW_SUFFIX):
        return unicode_name(name[: -len(NEW_SUFFIX)]) + "′"
    if name.endswith("__sum"):
        return "Σ" + unicode_name(name[: -len("__sum")])
    if re.fullmatch(r"reduce__in\d*", name):  # the argument of a reduction
        return "ρ" + (name[len("reduce__in"):] or "1").translate(_SUB)
    m = re.fullmatch(r"(.+?)__in(\d*)", name)
    if m:                                 # W__in: the operand lifted for `(...) @ W`
        return f"in{m.group(2)}[{m.group(1)}]"
    if "__" in name:                      # x__W_xi: the lifted product x @ W_xi
        left, right = name.rsplit("__", 1)
        return f"{unicode_name(left)}·{right}"
    return name


def latex_name(name: str) -> str:
    if name.startswith("d__"):
        return r"\partial " + latex_name(name[3:])
    if name.startswith("sum__"):
        return r"\textstyle\sum_j \partial " + latex_name(name[5:])
    if name.startswith(SIZE_PREFIX):
        return f"|{name[len(SIZE_PREFIX):]}|"
    if re.fullmatch(r"t__\d+", name):
        return f"t_{{{name[3:]}}}"
    if name.endswith(NEW_SUFFIX):
        return latex_name(name[: -len(NEW_SUFFIX)]) + "'"
    if name.endswith("__sum"):
        return r"\Sigma " + latex_name(name[: -len("__sum")])
    if re.fullmatch(r"reduce__in\d*", name):
        return rf"\rho_{{{name[len('reduce__in'):] or '1'}}}"
    m = re.fullmatch(r"(.+?)__in(\d*)", name)
    if m:
        return rf"\mathrm{{in}}_{{{latex_name(m.group(1))}}}"
    if "__" in name:
        left, right = name.rsplit("__", 1)
        return f"{latex_name(left)} {latex_name(right)}"
    head, _, sub = name.partition("_")
    head = rf"\{head}" if head in ("beta", "gamma", "alpha", "mu", "sigma") else head
    return f"{head}_{{{sub}}}" if sub else head


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


def latex(expr: sympy.Expr) -> str:
    return _LATEX.doprint(expr)


def equation(name: str, expr: sympy.Expr, *, tex: bool = False) -> str:
    """`name = expr` as text (Unicode) or LaTeX."""
    if tex:
        return f"{latex_name(name)} = {latex(expr)}"
    return f"{unicode_name(name)} = {unicode(expr)}"


__all__ = ["unicode", "latex", "equation", "unicode_name", "latex_name"]
