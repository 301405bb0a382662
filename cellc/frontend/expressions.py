"""Equations → SymPy, through a whitelist of Python AST node types, with shape inference.

`ExpressionConverter` is the part of the front end that reads one right-hand side. It
never evaluates anything: each AST node it accepts maps to a SymPy constructor (`+` to
`Add`, `sigmoid(...)` to the registered function, `v @ W` to `Affine`), and every
other node is refused with a `SpecError` that says what the language offers instead.
Alongside each expression it returns a dimension variable, unified as it goes (`dims.py`),
so `x + h` with different sizes fails on the line that says so.

It relies on the front end (`spec._Frontend`) for the spec's names and for `fail`.
"""
from __future__ import annotations

import ast
import math

import sympy

from .. import naming
from ..errors import did_you_mean
from ..ir.cell import CONSTANTS_RULE, FLOAT32_MAX, ONE, Affine, RowMean, RowSum, representable, symbol
from ..ir.functions import CALLABLE, floor, ge, gt, maximum, mod, where
from ..ir.weights import Eye, Hadamard, Plus, Product, Ref, Scaled, Transposed
from .dims import DimConflict

MAX_DEPTH = 64
MAX_POWER_LOG = 2 * math.log(FLOAT32_MAX)   # |e * ln|b||: b ** e is computed below it
# Reductions over a vector's units, each one number per row (see ir.RowSum). Variance is
# the two-pass mean((v - mean(v))**2): no cancellation, unlike mean(v**2) - mean(v)**2.
REDUCTIONS = {
    "sum": ("sum of a vector's units", RowSum),
    "mean": ("mean of a vector's units", RowMean),
    "var": ("variance of a vector's units (biased, as layer norm uses)",
            lambda e: RowMean((e - RowMean(e)) ** 2)),
}


def _any(conditions):
    return conditions[0] if len(conditions) == 1 else maximum(conditions[0], _any(conditions[1:]))


_ARITHMETIC = {ast.Add: sympy.Add, ast.Sub: lambda p, q: p - q, ast.Mult: sympy.Mul,
               ast.Div: lambda p, q: p / q, ast.Mod: mod, ast.FloorDiv: lambda p, q: floor(p / q)}
# Each comparison as the registered ones (`a < b` is `b > a`), each 1 where it holds
_COMPARISONS = {ast.Gt: gt, ast.GtE: ge, ast.Lt: lambda a, b: gt(b, a),
                ast.LtE: lambda a, b: ge(b, a), ast.Eq: lambda a, b: ge(a, b) * ge(b, a),
                ast.NotEq: lambda a, b: 1 - ge(a, b) * ge(b, a)}


_ARGUMENTS = {1: "x", 2: "a, b", 3: "c, a, b"}


def negated(m):
    """-m, folding the sign into a scale: `W - gamma * eye(H)` scales eye by -gamma."""
    return Scaled(-m.scale, m.a) if isinstance(m, Scaled) else Scaled(sympy.Integer(-1), m)


class ExpressionConverter:
    conditions: set          # the expressions that are comparisons, for `and`/`or`/`not`

    def where(self, tree) -> str:
        return naming.spec_form(ast.get_source_segment(self.source, tree) or "")

    def unify(self, a, b, what, tree):
        try:
            self.dims.unify(a, b)
        except DimConflict as err:
            x, y = err.names
            self.fail(f"shape mismatch in `{self.where(tree)}`: size {x} vs size {y} "
                      f"({what})", line=self.line, symbol=what,
                      fix="elementwise operations need equal sizes; project one side with a "
                          "weight matrix (`v @ W`) or declare the sizes in `inputs`/`states`")

    def is_row(self, dim) -> bool:
        """Whether `dim` is a per-row scalar's (a reduction's result), which broadcasts."""
        return dim is not None and self.dims.name(dim) == ONE

    def broadcast(self, da, db, tree):
        """The dimension of an elementwise operation on operands of dimensions da, db:
        a constant (None) or a per-row scalar stretches to the other operand."""
        if da is None or (self.is_row(da) and db is not None):
            return db
        if db is None or self.is_row(db):
            return da
        self.unify(da, db, self.where(tree), tree)
        return da

    def expr(self, tree, depth):
        """Convert one AST expression to (SymPy expression, dimension variable or None)."""
        if depth > MAX_DEPTH:
            self.fail("expression nested too deeply", line=self.line,
                      fix="split it into named intermediate equations")
        depth += 1
        if isinstance(tree, ast.Constant):
            value = tree.value
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self.fail(f"unsupported constant {value!r}", line=self.line,
                          fix="constants are plain numbers such as 1, 0.5 or 1e-3")
            if not representable(value):
                shown = self.where(tree)
                shown = shown if len(shown) <= 24 else shown[:20] + "..."
                self.fail(f"constant `{shown}` is out of range", line=self.line,
                          fix=CONSTANTS_RULE)
            return (sympy.Integer(value) if isinstance(value, int) else sympy.Float(value)), None
        if isinstance(tree, ast.Name):
            return self.name(tree.id, tree)
        if isinstance(tree, ast.UnaryOp) and isinstance(tree.op, (ast.USub, ast.UAdd)):
            expr, dim = self.expr(tree.operand, depth)
            return (-expr if isinstance(tree.op, ast.USub) else expr), dim
        if isinstance(tree, ast.BinOp) and isinstance(tree.op, ast.MatMult):
            return self.matmul(tree, depth)
        if isinstance(tree, ast.BinOp) and isinstance(tree.op, ast.Pow):
            base, dim = self.expr(tree.left, depth)
            exponent, edim = self.expr(tree.right, depth)
            if edim is not None or not exponent.is_Number:
                self.fail(f"exponent in `{self.where(tree)}` must be a number", line=self.line,
                          fix="write a constant power such as h**2; use exp(b * log(a)) "
                              "for a variable exponent")
            if base.is_Number and not (base.is_zero or abs(base) == 1) and abs(
                    float(exponent) * math.log(abs(float(base)))) > MAX_POWER_LOG:
                self.fail(f"`{self.where(tree)}` is out of range", line=self.line,
                          fix=CONSTANTS_RULE)      # refused before SymPy computes it
            return self.finite(base ** exponent, tree), dim
        if isinstance(tree, ast.BinOp) and type(tree.op) in _ARITHMETIC:
            a, da = self.expr(tree.left, depth)
            b, db = self.expr(tree.right, depth)
            dim = self.broadcast(da, db, tree)
            if isinstance(tree.op, (ast.Div, ast.Mod, ast.FloorDiv)) and b.is_Number and b.is_zero:
                self.fail(f"division by zero in `{self.where(tree)}`", line=self.line,
                          fix="divide by a non-zero constant or by an expression")
            return self.finite(_ARITHMETIC[type(tree.op)](a, b), tree), dim
        if isinstance(tree, ast.Call):
            return self.call(tree, depth)
        if isinstance(tree, ast.Compare):
            return self.compare(tree, depth)
        if isinstance(tree, ast.BoolOp) or (isinstance(tree, ast.UnaryOp) and isinstance(tree.op, ast.Not)):
            return self.logic(tree, depth)
        if isinstance(tree, ast.IfExp):          # `a if c else b` is where(c, a, b)
            parts = [self.expr(t, depth) for t in (tree.test, tree.body, tree.orelse)]
            return where(*(e for e, _ in parts)), self.broadcast_all(parts, tree)
        kind = type(tree).__name__
        if isinstance(tree, ast.BinOp) and isinstance(tree.op, ast.BitXor):
            self.fail(f"`^` in `{self.where(tree)}` is not a power", line=self.line,
                      fix="write a power as `a ** b`")
        hint = {"Attribute": "attributes (a.b) are not part of the language",
                "Subscript": "indexing is not part of the language; every value is a vector"}
        self.fail(f"unsupported syntax ({kind}) in `{self.where(tree)}`", line=self.line,
                  fix=hint.get(kind, "equations use + - * / % // ** @, comparisons, "
                                     "`a if c else b`, numbers, names and the functions "
                                     + ", ".join(sorted([*CALLABLE, *REDUCTIONS]))))

    def broadcast_all(self, parts, tree):
        """The dimension of an elementwise operation on all of `parts` (expr, dim)."""
        dim = None
        for _, d in parts:
            dim = self.broadcast(dim, d, tree)
        return dim

    def compare(self, tree, depth):
        """`a > b`, `a <= b < c` (each pair, all must hold): 1 where it holds, else 0."""
        operands = [self.expr(t, depth) for t in (tree.left, *tree.comparators)]
        dim = self.broadcast_all(operands, tree)
        result = sympy.S.One
        for op, (a, _), (b, _) in zip(tree.ops, operands, operands[1:]):
            if type(op) not in _COMPARISONS:
                self.fail(f"`{self.where(tree)}`: `{type(op).__name__}` is not a comparison "
                          "of numbers", line=self.line, fix="compare with < <= > >= == !=")
            result = result * _COMPARISONS[type(op)](a, b)
        self.conditions.add(result)
        return result, dim

    def logic(self, tree, depth):
        """`and`, `or`, `not` over comparisons (each 1 or 0)."""
        operands = [tree.operand] if isinstance(tree, ast.UnaryOp) else tree.values
        parts = [self.expr(t, depth) for t in operands]
        for t, (e, _) in zip(operands, parts):
            if e not in self.conditions:
                self.fail(f"`{self.where(t)}` is not a comparison", line=self.line,
                          fix="`and`, `or` and `not` combine comparisons, e.g. "
                              "`where(a > 0 and b > 0, a, b)`")
        dim = self.broadcast_all(parts, tree)
        exprs = [e for e, _ in parts]
        result = (1 - exprs[0] if isinstance(tree, ast.UnaryOp)
                  else sympy.Mul(*exprs) if isinstance(tree.op, ast.And)
                  else maximum(*exprs[:2]) if len(exprs) == 2 else _any(exprs))
        self.conditions.add(result)
        return result, dim

    def finite(self, expr, tree):
        """`expr`, unless a constant in it is not a real number a float32 kernel can
        hold (`0 ** -1`, `(-1) ** 0.5`, `1e30 * 1e30`, `10 ** 40`)."""
        if expr.has(sympy.I, sympy.zoo, sympy.oo, sympy.nan) or not all(
                representable(n) for n in expr.atoms(sympy.Number)):
            self.fail(f"`{self.where(tree)}` is not a finite real number in range",
                      line=self.line, fix=CONSTANTS_RULE)
        return expr

    def name(self, ident, tree):
        shown = naming.display_spec(ident)
        col = self.col_of(self.line, ident)
        if ident in self.constants:                     # named constants fold in place
            self.constants_used.add(ident)
            return self.constants[ident][0], None
        if ident in self.var_dim:
            return symbol(ident), self.var_dim[ident]
        if ident in self.node_dim:
            return symbol(ident), self.node_dim[ident]
        if ident in self.param_names:
            kind = self.param_kind.setdefault(ident, ("vector", self.dims.fresh()))
            if kind[0] != "vector":
                self.fail(f"parameter `{ident}` is used as a matrix elsewhere but as a vector "
                          "here", line=self.line, col=col, symbol=ident,
                          fix="use a separate parameter for each role")
            return symbol(ident), kind[1]
        base = naming.state_of(ident)
        if base is not None:
            if any(s.name == base for s in self.states):
                self.fail(f"`{shown}` is used but never defined", line=self.line, col=col,
                          symbol=shown, fix=f"add an equation `{shown} = ...`")
            self.fail(f"`{shown}`: only states have a new value", line=self.line, col=col,
                      symbol=shown, fix="declare it in `states`, or drop the prime")
        if ident in CALLABLE or ident in REDUCTIONS:
            self.fail(f"function `{ident}` used as a value", line=self.line, col=col,
                      symbol=ident, fix=f"call it: {ident}(...)")
        known = set(self.var_dim) | set(self.node_dim) | set(self.param_names)
        self.fail(f"`{ident}` is never defined.{did_you_mean(ident, known)}", line=self.line,
                  col=col, symbol=ident,
                  fix=f"define it with an equation `{ident} = ...`, or declare it in "
                      "`inputs`, `states` or `parameters`")

    def matmul(self, tree, depth):
        left, dim = self.expr(tree.left, depth)
        right = tree.right
        if not isinstance(right, ast.Name):         # a weight expression, `h @ (W - W.T)`
            if dim is None:
                self.fail(f"left operand of `{self.where(tree)}` is a constant", line=self.line,
                          fix="the left operand of @ must be a vector expression")
            return self.derived_product(left, dim, right, tree, depth)
        if not (isinstance(right, ast.Name) and right.id in self.param_names):
            what = self.where(right)
            fix = ("cellc uses row vectors: write `v @ W`, with W of shape (in, out)"
                   if isinstance(tree.left, ast.Name) and tree.left.id in self.param_names
                   else f"declare `{what}` in `parameters`" if isinstance(right, ast.Name)
                   else "the right operand of @ must be a weight parameter")
            self.fail(f"`{what}` on the right of @ is not a parameter", line=self.line,
                      col=self.col_of(self.line, what), symbol=what, fix=fix)
        if dim is None:             # a per-row scalar is fine: `t @ W_t` with W_t of [1, H]
            self.fail(f"left operand of `{self.where(tree)}` is a constant", line=self.line,
                      fix="the left operand of @ must be a vector expression")
        kind = self.param_kind.setdefault(right.id, ("matrix", self.dims.fresh(), self.dims.fresh()))
        if kind[0] != "matrix":
            self.fail(f"parameter `{right.id}` is used as a vector elsewhere but as a matrix "
                      "here", line=self.line, col=self.col_of(self.line, right.id),
                      symbol=right.id, fix="use a separate parameter for each role")
        self.unify(kind[1], dim, f"rows of {right.id}", tree)
        return Affine(left, symbol(right.id)), kind[2]

    # ---- weight expressions (ir/weights.py) ---------------------------------------------
    def derived_product(self, left, dim, right, tree, depth):
        """`left @ (matrix expression)`: the expression becomes a weight of its own."""
        self.weight_source = self.where(right)        # for messages
        part = self.matrix(right, depth)
        if part[0] != "matrix":
            self.fail(f"`{self.where(right)}` on the right of @ is a number", line=self.line,
                      fix="the right operand of @ is a weight: a parameter, or an expression "
                          "of them such as (W - W.T)")
        _, m, rows, cols = part
        name = self.derived_by_expr.get(m)
        if name is None:
            name = self.derived_by_expr[m] = naming.weight_expression(len(self.derived) + 1)
            self.derived[name] = m
            self.param_kind[name] = ("matrix", rows, cols)
        rows, cols = self.param_kind[name][1:]
        self.unify(rows, dim, f"rows of `{self.where(right)}`", tree)
        return Affine(left, symbol(name)), cols

    def matrix(self, tree, depth):
        """One part of a weight expression: ("matrix", Matrix, rows, cols) or ("scalar",
        SymPy expression over scalar parameters and numbers)."""
        if depth > MAX_DEPTH:
            self.fail("expression nested too deeply", line=self.line,
                      fix="split it into named intermediate equations")
        depth += 1
        shown = self.where(tree)
        fix = ("a weight expression holds parameters, numbers, named constants, eye(D), .T, "
               "+ - * / and @")
        if isinstance(tree, ast.Constant):
            return "scalar", self.expr(tree, depth)[0]
        if isinstance(tree, ast.Name):
            ident = tree.id
            if ident in self.constants:
                self.constants_used.add(ident)
                return "scalar", self.constants[ident][0]
            if ident not in self.param_names:
                self.fail(f"`{ident}` in the weight expression `{self.weight_source}` is "
                          "not a parameter",
                          line=self.line, col=self.col_of(self.line, ident), symbol=ident, fix=fix)
            kind = self.param_kind.get(ident)
            if kind is not None and kind[0] == "vector":
                if self.is_row(kind[1]):
                    return "scalar", symbol(ident)
                self.fail(f"`{ident}` is a vector, used in the weight expression "
                          f"`{self.weight_source}`",
                          line=self.line, symbol=ident,
                          fix="a weight expression holds matrices and scalars ([shapes] "
                              f"{ident} = [] for a scalar)")
            kind = self.param_kind.setdefault(ident, ("matrix", self.dims.fresh(), self.dims.fresh()))
            return "matrix", Ref(ident), kind[1], kind[2]
        if isinstance(tree, ast.Attribute) and tree.attr == "T":
            part = self.matrix(tree.value, depth)
            if part[0] != "matrix":
                self.fail(f"`{shown}` transposes a number", line=self.line, fix=fix)
            return "matrix", Transposed(part[1]), part[3], part[2]
        if (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id == "eye"):
            arg = tree.args[0] if len(tree.args) == 1 and not tree.keywords else None
            if not (isinstance(arg, ast.Name) and arg.id in self.dim_names):
                self.fail(f"`{shown}`: eye takes one dimension", line=self.line,
                          fix="write eye(H), with H a dimension of the cell")
            d = self.dims.named(arg.id)
            return "matrix", Eye(arg.id), d, d
        if isinstance(tree, ast.UnaryOp) and isinstance(tree.op, (ast.USub, ast.UAdd)):
            part = self.matrix(tree.operand, depth)
            sign = -1 if isinstance(tree.op, ast.USub) else 1
            if part[0] == "scalar":
                return "scalar", sign * part[1]
            return ("matrix", negated(part[1]) if sign < 0 else part[1], *part[2:])
        if isinstance(tree, ast.BinOp):
            return self.matrix_binop(tree, depth, fix)
        self.fail(f"`{shown}` cannot be part of a weight expression", line=self.line, fix=fix)

    def matrix_binop(self, tree, depth, fix):
        a, b = self.matrix(tree.left, depth), self.matrix(tree.right, depth)
        op, shown = type(tree.op), self.where(tree)
        if a[0] == b[0] == "scalar" and op in _ARITHMETIC and op not in (ast.Mod, ast.FloorDiv):
            return "scalar", self.finite(_ARITHMETIC[op](a[1], b[1]), tree)
        if a[0] == b[0] == "scalar" and op is ast.Pow and b[1].is_Number:
            return "scalar", self.finite(a[1] ** b[1], tree)
        if a[0] == b[0] == "matrix" and op in (ast.Add, ast.Sub, ast.Mult):
            self.unify(a[2], b[2], f"rows in `{shown}`", tree)
            self.unify(a[3], b[3], f"columns in `{shown}`", tree)
            m = (Plus(a[1], b[1]) if op is ast.Add else
                 Plus(a[1], negated(b[1])) if op is ast.Sub else
                 Hadamard(a[1], b[1]))
            return "matrix", m, a[2], a[3]
        if a[0] == b[0] == "matrix" and op is ast.MatMult:
            self.unify(a[3], b[2], f"inner size of `{shown}`", tree)
            return "matrix", Product(a[1], b[1]), a[2], b[3]
        if {a[0], b[0]} == {"scalar", "matrix"} and op is ast.Mult:
            s, m = (a, b) if a[0] == "scalar" else (b, a)
            return "matrix", Scaled(s[1], m[1]), m[2], m[3]
        if a[0] == "matrix" and b[0] == "scalar" and op is ast.Div:
            if b[1].is_zero:
                self.fail(f"division by zero in `{shown}`", line=self.line,
                          fix="divide by a non-zero constant or by an expression")
            return "matrix", Scaled(1 / b[1], a[1]), a[2], a[3]
        what = ("a matrix plus a number: write c * eye(H)" if op in (ast.Add, ast.Sub)
                else fix)
        self.fail(f"`{shown}` is not a weight expression cellc can build", line=self.line,
                  fix=what)

    def call(self, tree, depth):
        fname = tree.func.id if isinstance(tree.func, ast.Name) else None
        if fname in REDUCTIONS:
            return self.reduction(fname, tree, depth)
        if fname not in CALLABLE:
            shown = fname or self.where(tree.func)
            self.fail(f"unknown function `{shown}`.{did_you_mean(shown, CALLABLE)}",
                      line=self.line, col=self.col_of(self.line, shown), symbol=shown,
                      fix="available: " + ", ".join(sorted([*CALLABLE, *REDUCTIONS])) +
                          "; add a new one with define() in cellc/ir/functions.py")
        fn = CALLABLE[fname]
        if tree.keywords or len(tree.args) != fn.spec.arity or any(
                isinstance(a, ast.Starred) for a in tree.args):
            self.fail(f"`{fname}` takes {fn.spec.arity} argument(s), given "
                      f"`{self.where(tree)}`", line=self.line, symbol=fname,
                      fix=f"call it as {fname}({_ARGUMENTS[fn.spec.arity]})")
        args = [self.expr(a, depth) for a in tree.args]
        return fn(*(a for a, _ in args)), self.broadcast_all(args, tree)

    def reduction(self, fname, tree, depth):
        if tree.keywords or len(tree.args) != 1 or isinstance(tree.args[0], ast.Starred):
            self.fail(f"`{fname}` takes one vector, given `{self.where(tree)}`",
                      line=self.line, symbol=fname, fix=f"call it as {fname}(v)")
        arg, dim = self.expr(tree.args[0], depth)
        if dim is None or self.is_row(dim):
            what = "a constant" if dim is None else "already one number per row"
            self.fail(f"`{self.where(tree)}`: the argument of `{fname}` is {what}",
                      line=self.line, symbol=fname,
                      fix=f"{fname} reduces a vector over its units, e.g. {fname}(c')")
        return REDUCTIONS[fname][1](arg), self.dims.named(ONE)
