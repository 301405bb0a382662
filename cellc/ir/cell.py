"""The cell IR, shared by the NumPy interpreter and the back end.

A cell is a list of single-assignment nodes, one time step of the recurrence:

    Node(name, dim, expr)                  elementwise: `expr` is a SymPy expression
                                           over other values and registered functions
    Node(name, dim, operand=v, weight=W)   affine: name = v @ W (row-vector convention)

Values a node may read are the cell's inputs (x_t), the previous states (h_{t-1},
written `h`), parameters, and earlier nodes. The new value of state `h` (written `h'`
in specs) is the node named `naming.new("h")`. The front end may leave `Affine(e, W)`
terms inside expressions; the `split` pass turns each into an affine node, after
which every expression is purely elementwise.

Dimensions are names ("I", "H", ...), bound to sizes only when a kernel runs.

Reductions over the units of a vector (layer normalization's mean and variance) are
nodes too: `Node(name, ONE, expr=RowSum(v))` is the sum of vector `v` over its
dimension, one number per row. A value of dimension `ONE` broadcasts against any
vector, and the size of dimension D is the symbol `size_symbol("D")`, so `mean(v)` is
`RowSum(v) / |D|`. `RowSum` differentiates to 1: the adjoint of each unit of `v` is the
adjoint of the sum, and the sum over units of a broadcast scalar's uses is done by the
passes (interpreter and kernels alike).
"""
from __future__ import annotations

import fractions
import math
from typing import NamedTuple

import sympy

from .. import naming
from .functions import CellFunction

ONE = "1"            # the dimension of a per-row scalar, such as a reduction's result


def size_symbol(dim: str) -> sympy.Symbol:
    """The number of units of dimension `dim`, as a positive symbol in expressions."""
    return sympy.Symbol(naming.size(dim), positive=True)


def is_size(name: str) -> bool:
    return naming.kind_of(name) == naming.LEN


class Affine(sympy.Function):
    """`operand @ weight` inside an expression, before the `split` pass."""

    nargs = 2

    def _sympystr(self, printer):
        return f"({printer._print(self.args[0])} @ {printer._print(self.args[1])})"


class RowSum(sympy.Function):
    """The sum of a vector over its units: one number per row (dimension ONE)."""

    nargs = 1

    def fdiff(self, argindex=1):
        return sympy.S.One

    def _sympystr(self, printer):
        return f"sum({printer._print(self.args[0])})"


class RowMean(sympy.Function):
    """`mean(e)` as the front end reads it; the `split` pass turns it into a `RowSum`
    node divided by the size of e's dimension."""

    nargs = 1

    def _sympystr(self, printer):
        return f"mean({printer._print(self.args[0])})"


# Every module has float32 kernels: a constant must be a real number they can hold.
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.1754943508222875e-38      # the smallest normal float32
CONSTANTS_RULE = ("constants must be finite real numbers, 0 or between 1.2e-38 and 3.4e38 "
                  "in magnitude: every module has float32 kernels")


def representable(x) -> bool:
    """Whether constant `x` (a Python or SymPy number) is a real number that float32
    kernels hold: finite, at most FLOAT32_MAX in magnitude, and 0 or at least
    FLOAT32_TINY (a smaller one would silently become 0 there). Exact for integers and
    rationals of any size."""
    if isinstance(x, sympy.Rational):
        x = fractions.Fraction(int(x.p), int(x.q))
    elif isinstance(x, sympy.Float):
        x = float(x) if float(x) != 0 or x.is_zero else math.nan
    elif isinstance(x, sympy.Basic):
        return False                                # nan, oo, zoo, I, ...
    if isinstance(x, float) and not math.isfinite(x):
        return False
    return x == 0 or FLOAT32_TINY <= abs(x) <= FLOAT32_MAX


def symbol(name: str) -> sympy.Symbol:
    """The SymPy symbol standing for IR value `name` (all values are real)."""
    return sympy.Symbol(name, real=True)


class Var(NamedTuple):
    name: str
    dim: str
    grad: bool = True        # False: an input nobody differentiates (a regularizer's mask),
                             # whose adjoint is neither computed nor returned


class Init(NamedTuple):
    """How a parameter is initialised: kind in {default, constant, zeros, ones, uniform,
    normal, orthogonal}, with numeric arguments."""

    kind: str = "default"
    args: tuple[float, ...] = ()


class Param(NamedTuple):
    name: str
    shape: tuple[str, ...]   # (dim,) for a per-unit vector, (in, out) for a matrix
    init: Init = Init()
    derived: object = None   # a weight expression (ir/weights.py): computed, not passed


class Node(NamedTuple):
    name: str
    dim: str
    expr: sympy.Expr | None = None   # elementwise nodes
    operand: str | None = None       # affine nodes: name = operand @ weight
    weight: str | None = None
    line: int | None = None          # line in the spec file, for messages
    text: str | None = None          # the equation this node comes from, as written

    @property
    def is_matmul(self) -> bool:
        return self.weight is not None

    def reads(self) -> tuple[str, ...]:
        """Names of the values this node reads, in a deterministic order."""
        if self.is_matmul:
            return (self.operand, self.weight)
        return tuple(sorted(s.name for s in self.expr.free_symbols if not is_size(s.name)))

    @property
    def is_reduction(self) -> bool:
        return isinstance(self.expr, RowSum)


def live_names(nodes, roots) -> set[str]:
    """Every name (node, input, state or parameter) that the `roots` read, directly or
    through other nodes: what a step must compute. Anything else is dead."""
    by_name = {n.name: n for n in nodes}
    live, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in live:
            continue
        live.add(name)
        if name in by_name:
            todo.extend(by_name[name].reads())
    return live


class Cell(NamedTuple):
    name: str
    summary: str
    reference: str
    inputs: tuple[Var, ...]
    states: tuple[Var, ...]
    params: tuple[Param, ...]
    nodes: tuple[Node, ...]          # topologically ordered, single assignment
    output: str                      # the node whose value is the output sequence
    path: str = "<spec>"
    spec_hash: str = ""
    torch: object = None             # frontend.torchmap.TorchMap from the spec's [torch]
    regularizers: object = None      # runtime.regularizers.Regularizers applied
    constants: tuple = ()            # (name, value) of the spec's named constants, folded
                                     # into the nodes already: for `show` and the docs

    @property
    def dims(self) -> tuple[str, ...]:
        """All dimension names, sorted, e.g. ("H", "I")."""
        names = {v.dim for v in self.inputs + self.states} | {n.dim for n in self.nodes}
        names.update(d for p in self.params for d in p.shape)
        names.discard(ONE)                 # not a size anyone binds: it is 1
        return tuple(sorted(names))

    def node(self, name: str) -> Node:
        return {n.name: n for n in self.nodes}[name]

    def dim_of(self) -> dict[str, str]:
        """Map from every vector value's name to its dimension."""
        dims = {v.name: v.dim for v in self.inputs + self.states}
        dims.update((p.name, p.shape[0]) for p in self.params if len(p.shape) == 1)
        dims.update((n.name, n.dim) for n in self.nodes)
        return dims

    def order(self) -> dict[str, int]:
        """Every name's place in the spec: inputs, states, parameters, then equations
        (the order the back end loads and lists values in)."""
        names = [v.name for v in self.inputs + self.states] + [p.name for p in self.params]
        names += [n.name for n in self.nodes]
        return {name: k for k, name in enumerate(names)}


def biases(cell: Cell) -> tuple[str, ...]:
    """The cell's biases: the vector parameters that are, wherever they are read, the
    constant term of an affine map, a term of a sum whose other terms read a weight, a
    gain or a value computed from them (`x @ W + b`, `r * (h @ W_hn + b_hn)`,
    `g * n + beta`), so that a zero bias is no bias. A phase shift `t - shift` adds to
    an input alone and is no bias. These are what torch.nn's `bias=False` drops
    (`cellc.torch.RNN(bias=False)`)."""
    params = {symbol(p.name) for p in cell.params} | {symbol(n.name) for n in cell.nodes}
    found = []
    for p in cell.params:
        if len(p.shape) != 1 or p.shape == (ONE,) or p.derived is not None:
            continue
        s = symbol(p.name)
        reading = [n for n in cell.nodes if n.expr is not None and n.expr.has(s)]
        if reading and all(_constant_term(n.expr, s, params - {s}) for n in reading):
            found.append(p.name)
    return tuple(found)


def _constant_term(expr, s, weights) -> bool:
    """Whether every occurrence of `s` in `expr` is a term (`s` or `-s`) of a sum whose
    other terms read one of `weights` (or hold a matrix product)."""
    if expr == s:
        return False
    for arg in expr.args:
        if not arg.has(s):
            continue
        if expr.is_Add and (arg == s or arg == -s):
            if not any(t.free_symbols & weights or t.atoms(Affine)
                       for t in expr.args if not t.has(s)):
                return False
        elif not _constant_term(arg, s, weights):
            return False
    return True


def typecheck(cell: Cell) -> Cell:
    """Check the IR's invariants: single assignment, defined-before-use, shapes, and
    that every state is updated. Raises AssertionError: a failure is a compiler bug
    (spec errors are reported earlier, as SpecError, by the front end)."""
    params = {p.name: p for p in cell.params}
    dims = {v.name: v.dim for v in cell.inputs + cell.states}
    for p in cell.params:
        assert p.name not in dims, f"{p.name} defined twice"
        if len(p.shape) == 1:
            dims[p.name] = p.shape[0]
    for node in cell.nodes:
        assert node.name not in dims and node.name not in params, f"{node.name} assigned twice"
        if node.is_matmul:
            weight = params[node.weight]
            assert weight.shape == (dims[node.operand], node.dim), f"bad shape in {node}"
        else:
            terms = node.expr.atoms(Affine)         # before split: `v @ W` inside
            for term in terms:                   # (nested products checked on their own)
                shape, operand = params[term.args[1].name].shape, term.args[0]
                operand = operand.xreplace({t: sympy.Dummy() for t in operand.atoms(Affine)})
                _check_operands(operand, shape[0], dims, node.name)
            outside = node.expr.xreplace({t: sympy.Dummy() for t in terms})
            if node.is_reduction:
                assert node.dim == ONE, f"bad reduction {node}"
            else:
                _check_operands(outside, node.dim, dims, node.name)
            for f in node.expr.atoms(sympy.Function):
                assert isinstance(f, (CellFunction, Affine, RowSum, RowMean)), \
                    f"unknown function {f.func}"
            for number in node.expr.atoms(sympy.Number):
                assert number.is_finite and number.is_real, f"{node.name}: constant {number}"
        dims[node.name] = node.dim
    for s in cell.states:
        assert dims.get(naming.new(s.name)) == s.dim, f"state {s.name} not updated"
    assert cell.output in dims
    return cell


def _check_operands(expr, dim: str, dims: dict, name: str) -> None:
    """Every value `expr` reads is defined, and outside reductions (whose arguments may
    be of any dimension) has dimension `dim` or is a per-row scalar."""
    for s in expr.free_symbols:
        if not isinstance(s, sympy.Dummy) and not is_size(s.name):
            assert s.name in dims, f"{name} reads undefined {s.name}"
    outside = expr.xreplace({r: sympy.Dummy() for r in expr.atoms(RowSum, RowMean)})
    for s in outside.free_symbols:
        if not isinstance(s, sympy.Dummy) and not is_size(s.name):
            assert dims[s.name] in (dim, ONE), f"{name}: {s.name} has dim {dims[s.name]}"


def format_equation(node: Node) -> str:
    """`name = expression` the way a user writes it: `h'` for new states, `v @ W`."""
    rhs = f"{node.operand} @ {node.weight}" if node.is_matmul else sympy.sstr(node.expr, order="none")
    return f"{naming.display_spec(node.name)} = {naming.spec_form(rhs)}"


def format_cell(cell: Cell) -> str:
    """Deterministic text form of the IR, one line per node (like autodidax's pp_jaxpr)."""
    lines = [f"cell {cell.name}",
             "  inputs  " + ", ".join(f"{v.name}[{v.dim}]" for v in cell.inputs),
             "  states  " + ", ".join(f"{v.name}[{v.dim}]" for v in cell.states),
             "  params  " + ", ".join(f"{p.name}[{','.join(p.shape)}]" for p in cell.params)]
    for n in cell.nodes:
        rhs = f"{n.operand} @ {n.weight}" if n.is_matmul else sympy.sstr(n.expr, order="lex")
        lines.append(f"  {n.name}[{n.dim}] = {rhs}")
    lines.append(f"  output {cell.output}")
    return "\n".join(lines)
