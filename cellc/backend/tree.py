"""The program tree: what a compiled cell computes, before any target language.

`lower.py` builds it from the derivation with pure functions; a target's printer prints
it once, at the end (`numba/printer.py`). Nothing here knows Numba, NumPy or CUDA: a
second target plugs in as a second printer of the same tree.

Scalars are SymPy expressions over local names and dimension sizes (`3*H + j__`), so
offsets and index arithmetic print as written and simplify as algebra. Arrays are
named, with shapes in the same expressions. A `View` is the 2-D block of an array that
a GEMM, a kernel call or a whole-array operation works on.

Statements inside kernels: `Assign`, `Comment`, `Loop`. Statements of the time loops and
the drivers add the whole-array operations (`Argument`, `Alloc`, `SetView`, `Gemm`,
`Call`, `Fill`, `CopyRows`, `Swap`, `Concat`, `Transpose`, `Copy`, `ColumnSums`,
`AddColumnSums`, `SumOf`,
`Bind`, `If`). A `Function`
is a kernel or a time loop; `Program` is everything one cell needs.
"""
from __future__ import annotations

from typing import NamedTuple, Union

import sympy

Expr = sympy.Expr


class Array(NamedTuple):
    """An array variable and its shape."""

    name: str
    shape: tuple


class View(NamedTuple):
    """Part of an array: `array[step]`, or the steps `steps = (start, stop)` (with
    `flat`, flattened into rows of a 2-D view); then only its first `rows` rows; then the
    columns `cols = (offset, width)` of its last axis; `transposed` last."""

    array: Array
    step: Expr | None = None
    steps: tuple | None = None
    flat: bool = False
    rows: Expr | None = None
    cols: tuple | None = None
    transposed: bool = False


class Element(sympy.Function):
    """One element of an array (a kernel's parameter), `Element(array, *index)` with the
    array's name as a symbol: a SymPy function, so that loads take part in expressions
    (`d__h = _d__h[r__, j__] + dyt__[r__, j__]`)."""

    @classmethod
    def of(cls, array: str, index) -> "Element":
        return cls(sympy.Symbol(array), *index)

    @property
    def array(self) -> str:
        return self.args[0].name

    @property
    def index(self) -> tuple:
        return self.args[1:]


class Assign(NamedTuple):
    """`target = value`, or `target += value` when `accumulate`."""

    target: Union[sympy.Symbol, Element]
    value: Expr
    accumulate: bool = False


class Comment(NamedTuple):
    text: str


class Loop(NamedTuple):
    """`for index in range(start, stop, stride)` (from stop - 1 down to start when
    `reverse`). `kind` says what it runs over: "rows", "units", "steps", "chunks" (a
    target may map rows and units to threads)."""

    index: sympy.Symbol
    stop: Expr
    body: tuple
    kind: str
    start: Expr = sympy.S.Zero
    reverse: bool = False
    stride: Expr = sympy.S.One


class If(NamedTuple):
    condition: Expr
    body: tuple
    orelse: tuple = ()


class Bind(NamedTuple):
    """A local name for a view or an element (`dyt__ = dy__[t]`)."""

    name: str
    value: Union[View, Element]


class Argument(NamedTuple):
    """`array` is the caller's `source[key]` (a parameter, an input)."""

    array: Array
    source: str
    key: str


class MatrixValue(NamedTuple):
    """`out = value` (or `out += value`), a weight expression of ir/weights.py whose
    `Ref`s name arrays and whose scalars are SymPy expressions over array names."""

    out: Array
    value: object
    accumulate: bool = False


class SetView(NamedTuple):
    """`dst[...] = src`."""

    dst: View
    src: View


class Alloc(NamedTuple):
    """Memory for an array (uninitialised)."""

    array: Array


class Gemm(NamedTuple):
    """`out = a @ b`, or `out += a @ b` when `accumulate`."""

    a: View
    b: View
    out: View
    accumulate: bool = False


class Call(NamedTuple):
    """Run a kernel or a time loop: its arguments in order (views, scalar expressions
    or tuples of them, as the function's parameters are grouped)."""

    function: str
    args: tuple
    results: tuple = ()         # names the call's return values are bound to


class Fill(NamedTuple):
    """Every element of `view` from row `start` on (all rows when None) set to `value`."""

    view: View
    value: Expr = sympy.S.Zero
    start: Expr | None = None


class CopyRows(NamedTuple):
    """`dst[start:stop] = src[start:stop]`."""

    dst: View
    src: View
    start: Expr
    stop: Expr


class Swap(NamedTuple):
    a: str
    b: str


class Concat(NamedTuple):
    """`out`: the views side by side, column blocks in order (fused weights)."""

    out: Array
    parts: tuple


class Transpose(NamedTuple):
    """`out = src.T`, contiguous."""

    out: Array
    src: View


class Copy(NamedTuple):
    """`out`: a contiguous copy of `src` (a weight gradient's column block)."""

    out: Array
    src: View
    accumulate: bool = False     # out += src


class ColumnSums(NamedTuple):
    """`out[j] = sum of src[:, j]` (vector parameters' gradients)."""

    out: Array
    src: View


class AddColumnSums(NamedTuple):
    """`out[0, j] += sum of src[:, j]`, compensated (Kahan, `out[1]` holding what the sum
    lost): a step's vector-parameter terms, summed while they are in cache."""

    out: View
    src: View


class SumOf(NamedTuple):
    """`out` = the sum of the 1-D `terms` (views of column sums), or zeros when none."""

    out: Array
    terms: tuple
    like: Array | None = None


class Param(NamedTuple):
    """A function parameter; parameters of one `group` may be passed together."""

    name: str
    group: str


class Function(NamedTuple):
    """A kernel (`kind` "kernel": the fused elementwise work of one region over `rows`
    rows) or a time loop (`kind` "steps")."""

    name: str
    kind: str
    params: tuple
    body: tuple
    doc: str = ""
    returns: tuple = ()
    scratch: tuple = ()          # kernels: (name, length) rows of scratch, once per call
    dtype_of: str | None = None  # kernels: the parameter whose dtype the literals take


class Program(NamedTuple):
    """Everything one cell needs, for a printer: the kernels and time loops, and the
    drivers' statements (training forward, backward, and the forward that saves
    nothing), run after the caller's arguments are checked."""

    functions: tuple             # Function, in the order they are made
    forward: tuple
    backward: tuple
    infer: tuple
    saved: tuple                 # Array: what forward keeps for backward, by name
    output: View                 # the output sequence, [T, B, width]
    infer_output: View
    final_states: tuple          # (state, its Array) in training
    infer_final_states: tuple    # (state, its Array) in the forward that saves nothing
    gradients: tuple             # (params, inputs, states): (key, array name) each


def walk(statements):
    """Every statement in `statements`, nested bodies included, in order."""
    for s in statements:
        yield s
        if isinstance(s, (Loop, If)):
            yield from walk(s.body)
        if isinstance(s, If):
            yield from walk(s.orelse)
