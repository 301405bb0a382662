"""Pass 1: split affine maps and reductions from elementwise work.

Every `Affine(e, W)` term inside an expression becomes its own affine node
`at__e__W = e @ W` (an equation that is nothing but a product, `hi = h @ W_hi`, names the
product itself). When `e` is not already a named value it first becomes an elementwise
node `in__W = e`, so a GEMM can sit between two elementwise stages (Cho's GRU computes
`(r * h) @ W`). Identical products are lifted once, so `h @ W` written twice is one GEMM
column block, not two.

Reductions are lifted the same way: `sum(e)` becomes a node `sum__e = RowSum(e)` of
dimension ONE (after naming `e` `arg__k` if needed), and `mean(e)` is that node divided
by the size of e's dimension, `len__D`.
"""
from __future__ import annotations

import sympy

from .. import naming
from ..errors import SpecError
from ..ir.cell import ONE, Affine, Cell, Node, RowMean, RowSum, is_size, size_symbol, symbol, typecheck


def split(cell: Cell) -> Cell:
    params = {p.name: p for p in cell.params}
    dims = cell.dim_of()
    news = {naming.new(s.name) for s in cell.states}
    nodes: list[Node] = []
    operands: dict[sympy.Expr, str] = {}
    products: dict[tuple[str, str], str] = {}
    counts = {"reduce": 0}

    def fresh(make) -> str:
        taken = {n.name for n in nodes} | set(dims)
        k = 1
        while make(k) in taken:
            k += 1
        return make(k)

    def operand_name(expr, weight, node) -> str:
        if expr.is_Symbol:
            return expr.name
        if expr not in operands:
            if not expr.free_symbols - set(map(size_symbol, dims.values())):
                what = ("the argument of a reduction" if weight is None
                        else f"the left operand of `@ {weight}`")
                raise SpecError(f"{what} simplifies to a constant", path=cell.path,
                                line=node.line, fix="it must depend on an input or a state")
            if weight is None:
                counts["reduce"] += 1
                name = fresh(lambda k: naming.reduction_argument(counts["reduce"] + k - 1))
            else:
                name = fresh(lambda k: naming.operand(weight, k))
            dim = next((dims[s] for s in sorted(s.name for s in expr.free_symbols)
                        if not is_size(s) and dims[s] != ONE), ONE)     # or a per-row scalar
            nodes.append(Node(name, dim, expr=expr, line=node.line, text=node.text))
            dims[name] = dim
            operands[expr] = name
        return operands[expr]

    def reduce(expr, node):
        op = operand_name(lift(expr.args[0], node), None, node)
        key = (op, "<sum>")
        if key not in products:
            name = naming.reduction(op)
            nodes.append(Node(name, ONE, expr=RowSum(symbol(op)), line=node.line, text=node.text))
            dims[name] = ONE
            products[key] = name
        total = symbol(products[key])
        return total / size_symbol(dims[op]) if isinstance(expr, RowMean) else total

    def lift(expr, node, name=None):
        """`expr` with its products and reductions lifted into nodes; a product that is
        the whole of node `name`'s expression takes that name."""
        if isinstance(expr, (RowSum, RowMean)):
            return reduce(expr, node)
        if isinstance(expr, Affine):
            inner, weight = lift(expr.args[0], node), expr.args[1].name
            op = operand_name(inner, weight, node)
            if op in params:
                raise SpecError(f"`{op} @ {weight}` multiplies two parameters", path=cell.path,
                                line=node.line, fix="fold it into a single bias parameter")
            key = (op, weight)
            if key not in products:
                products[key] = name or naming.product(op, weight)
                nodes.append(Node(products[key], params[weight].shape[1], operand=op,
                                  weight=weight, line=node.line, text=node.text))
                dims[products[key]] = params[weight].shape[1]
            return symbol(products[key])
        if not expr.args or expr.is_Atom:
            return expr
        return expr.func(*(lift(a, node) for a in expr.args))

    for node in cell.nodes:
        whole = node.name if node.name not in news else None
        expr = lift(node.expr, node, whole)
        if not (whole and expr == symbol(node.name)):        # not itself the product
            nodes.append(node._replace(expr=expr))
    return typecheck(cell._replace(nodes=tuple(nodes)))
