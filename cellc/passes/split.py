"""Pass 1: split affine maps and reductions from elementwise work.

Every `Affine(e, W)` term inside an expression becomes its own affine node
`e__W = e @ W`. When `e` is not already a named value it first becomes an elementwise
node `W__in = e`, so a GEMM can sit between two elementwise stages (Cho's GRU computes
`(r * h) @ W`). Identical products are lifted once, so `h @ W` written twice is one
GEMM column block, not two.

Reductions are lifted the same way: `sum(e)` becomes a node `e__sum = RowSum(e)` of
dimension ONE (after naming `e`, e.g. `reduce__in`, if needed), and `mean(e)` is that node divided by the
size of e's dimension, `len__D`.
"""
from __future__ import annotations

import sympy

from ..errors import SpecError
from ..ir.cell import ONE, Affine, Cell, Node, RowMean, RowSum, is_size, size_symbol, symbol, typecheck


def split(cell: Cell) -> Cell:
    params = {p.name: p for p in cell.params}
    dims = cell.dim_of()
    nodes: list[Node] = []
    operands: dict[sympy.Expr, str] = {}
    products: dict[tuple[str, str], str] = {}

    def operand_name(expr, weight, line) -> str:
        if expr.is_Symbol:
            return expr.name
        if expr not in operands:
            if not expr.free_symbols - set(map(size_symbol, dims.values())):
                what = ("the argument of a reduction" if weight == "reduce"
                        else f"the left operand of `@ {weight}`")
                raise SpecError(f"{what} simplifies to a constant", path=cell.path, line=line,
                                fix="it must depend on an input or a state")
            taken = {n.name for n in nodes} | set(dims)
            name, k = f"{weight}__in", 2
            while name in taken:
                name, k = f"{weight}__in{k}", k + 1
            dim = next(dims[s] for s in sorted(s.name for s in expr.free_symbols)
                       if not is_size(s) and dims[s] != ONE)
            nodes.append(Node(name, dim, expr=expr, line=line))
            dims[name] = dim
            operands[expr] = name
        return operands[expr]

    def reduce(expr, line):
        op = operand_name(lift(expr.args[0], line), "reduce", line)
        key = (op, "<sum>")
        if key not in products:
            name = f"{op}__sum"
            nodes.append(Node(name, ONE, expr=RowSum(symbol(op)), line=line))
            dims[name] = ONE
            products[key] = name
        total = symbol(products[key])
        return total / size_symbol(dims[op]) if isinstance(expr, RowMean) else total

    def lift(expr, line):
        if isinstance(expr, (RowSum, RowMean)):
            return reduce(expr, line)
        if isinstance(expr, Affine):
            inner, weight = lift(expr.args[0], line), expr.args[1].name
            op = operand_name(inner, weight, line)
            if op in params:
                raise SpecError(f"`{op} @ {weight}` multiplies two parameters", path=cell.path,
                                line=line, fix="fold it into a single bias parameter")
            key = (op, weight)
            if key not in products:
                name = f"{op}__{weight}"
                nodes.append(Node(name, params[weight].shape[1], operand=op, weight=weight,
                                  line=line))
                dims[name] = params[weight].shape[1]
                products[key] = name
            return symbol(products[key])
        if not expr.args or expr.is_Atom:
            return expr
        return expr.func(*(lift(a, line) for a in expr.args))

    for node in cell.nodes:
        nodes.append(node._replace(expr=lift(node.expr, node.line)))
    return typecheck(cell._replace(nodes=tuple(nodes)))
