"""The elementwise functions a spec may call, each defined once: value and derivative.

A function is a `sympy.Function` subclass whose `fdiff` comes from `grad`, so that
`sympy.diff` differentiates it the way we choose. Derivatives are written in terms of
the function's own output `y` where possible (sigmoid' = y*(1-y), tanh' = 1-y**2,
exp' = y): the backward pass then reuses the saved activation instead of recomputing.

Each entry has three faces, one per consumer of the IR:
  numpy  -- the reference value, used by the NumPy interpreter;
  kernel -- the Numba source for one element, `{0}`/`{1}` standing for the printed
            arguments and `T(...)` for a constant of the kernel's dtype;
  fast32 -- optionally, the body of a faster float32 version of `f(x)` (see below);
  grad   -- partial derivatives as SymPy expressions over registered functions only,
            so the derivative of anything in a spec stays inside this vocabulary.

Adding a function means adding one `define(...)` call below, nothing else.

Fast float32 versions. libm's expf/tanhf do not vectorize in Numba (about 0.07 Gelem/s
here), so tanh and sigmoid have float32 versions built from a clamped rational
approximation of tanh (the one Eigen uses), which vectorizes (about 3.5 Gelem/s).
The generated module dispatches on the dtype when Numba compiles a kernel: float32 gets
the fast version, float64 keeps the exact libm one. Worst-case error over all float32
inputs, measured by tests/test_functions.py against float64 libm:
    tanh     absolute 4e-7, relative 4e-7
    sigmoid  absolute 3e-7  (via sigmoid(x) = 0.5 + 0.5 * tanh(x / 2))
tanh is set to exactly ±1 from |x| = 9 on (where float32 tanh rounds to ±1), so both
saturate to their exact limits (±1, 0, 1), with derivatives exactly 0; both propagate NaN.

Subgradients (documented, and matching PyTorch): relu'(0) = 0, abs'(0) = sign(0) = 0,
step'(x) = sign'(x) = floor'(x) = 0, and comparisons have derivative 0; at a tie max(a, b)
and min(a, b) send half the gradient to each argument. The conditional `where(c, a, b)`
is a selection: its derivative is that of the branch selected, so at the boundary of
`where(x >= 0, f(x), g(x))` (x = 0) it is f'(0), the branch the condition picks there.
`mod(a, b)` = a - b * floor(a / b) (the sign of b, as Python's `%`) has derivatives
1 and -floor(a / b); at its jumps, those of the piece it lands on.

Conditions are numbers: a comparison is 1 where it holds and 0 where it does not (NaN
compares false), and `where` selects `a` where its condition is not 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import sympy


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    arity: int
    numpy: Callable
    kernel: str
    grad: Callable
    doc: str
    fast32: str | None = None
    operator: str | None = None   # written as an operator only (`a > b`), never called


class CellFunction(sympy.Function):
    """Base class of every function a spec may call (see `define`)."""

    spec: FunctionSpec

    def fdiff(self, argindex=1):
        return self.spec.grad(self, *self.args)[argindex - 1]


FUNCTIONS: dict[str, type[CellFunction]] = {}     # every function the IR may hold
CALLABLE: dict[str, type[CellFunction]] = {}      # ... those a spec calls by name


def define(name: str, *, numpy: Callable, kernel: str, grad: Callable, doc: str,
           arity: int = 1, fast32: str | None = None,
           operator: str | None = None) -> type[CellFunction]:
    """Register an elementwise function: its value (NumPy and Numba) and its derivative.
    With `operator`, a spec writes it as that operator (`a > b`) and cannot call it."""
    spec = FunctionSpec(name, arity, numpy, kernel, grad, doc, fast32, operator)
    cls = type(name, (CellFunction,), {"nargs": arity, "spec": spec, "__doc__": doc})
    FUNCTIONS[name] = cls
    if operator is None:
        CALLABLE[name] = cls
    return cls


def _np_sigmoid(x):
    with np.errstate(over="ignore"):
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


step = define(
    "step", numpy=lambda x: np.where(x > 0, 1.0, 0.0),
    kernel="(T(1) if {0} > T(0) else T(0))",
    grad=lambda y, x: [sympy.S.Zero],
    doc="Heaviside step: 1 where x > 0, else 0.")
sign = define(
    "sign", numpy=np.sign,
    kernel="np.sign({0})",
    grad=lambda y, x: [sympy.S.Zero],
    doc="Sign of x: -1, 0 or 1.")
sigmoid = define(
    "sigmoid", numpy=_np_sigmoid,
    kernel="T(1) / (T(1) + np.exp(-{0}))",
    fast32="return T(0.5) + T(0.5) * _tanh_f32(T(0.5) * x)",
    grad=lambda y, x: [y * (1 - y)],
    doc="Logistic function 1 / (1 + exp(-x)).")
tanh = define(
    "tanh", numpy=np.tanh,
    kernel="np.tanh({0})",
    fast32="return _tanh_f32(x)",
    grad=lambda y, x: [1 - y**2],
    doc="Hyperbolic tangent.")
relu = define(
    "relu", numpy=lambda x: np.maximum(x, 0.0),
    kernel="np.maximum({0}, T(0))",
    grad=lambda y, x: [step(x)],
    doc="max(x, 0); relu'(0) = 0.")
exp = define(
    "exp", numpy=np.exp,
    kernel="np.exp({0})",
    grad=lambda y, x: [y],
    doc="Exponential.")
log = define(
    "log", numpy=np.log,
    kernel="np.log({0})",
    grad=lambda y, x: [1 / x],
    doc="Natural logarithm.")
softplus = define(
    "softplus", numpy=lambda x: np.logaddexp(0.0, x),
    kernel="np.maximum({0}, T(0)) + np.log1p(np.exp(-np.abs({0})))",
    grad=lambda y, x: [sigmoid(x)],
    doc="log(1 + exp(x)), computed without overflow.")
abs_ = define(
    "abs", numpy=np.abs,
    kernel="np.abs({0})",
    grad=lambda y, x: [sign(x)],
    doc="Absolute value; abs'(0) = 0.")
sqrt = define(
    "sqrt", numpy=np.sqrt,
    kernel="np.sqrt({0})",
    grad=lambda y, x: [1 / (2 * y)],
    doc="Square root.")
maximum = define(
    "max", arity=2, numpy=np.maximum,
    kernel="np.maximum({0}, {1})",
    grad=lambda y, a, b: [(step(a - b) + 1 - step(b - a)) / 2,
                          (step(b - a) + 1 - step(a - b)) / 2],
    doc="Elementwise maximum; at a tie each argument gets half the gradient.")
minimum = define(
    "min", arity=2, numpy=np.minimum,
    kernel="np.minimum({0}, {1})",
    grad=lambda y, a, b: [(step(b - a) + 1 - step(a - b)) / 2,
                          (step(a - b) + 1 - step(b - a)) / 2],
    doc="Elementwise minimum; at a tie each argument gets half the gradient.")

gt = define(
    "gt", arity=2, operator=">", numpy=lambda a, b: np.where(a > b, 1.0, 0.0),
    kernel="T({0} > {1})",
    grad=lambda y, a, b: [sympy.S.Zero, sympy.S.Zero],
    doc="a > b: 1 where it holds, else 0 (NaN compares false).")
ge = define(
    "ge", arity=2, operator=">=", numpy=lambda a, b: np.where(a >= b, 1.0, 0.0),
    kernel="T({0} >= {1})",
    grad=lambda y, a, b: [sympy.S.Zero, sympy.S.Zero],
    doc="a >= b: 1 where it holds, else 0 (NaN compares false).")
where = define(
    "where", arity=3, numpy=lambda c, a, b: np.where(c != 0, a, b),
    kernel="({1} if {0} != T(0) else {2})",
    grad=lambda y, c, a, b: [sympy.S.Zero, where(c, sympy.S.One, sympy.S.Zero),
                             where(c, sympy.S.Zero, sympy.S.One)],
    doc="a where c is not 0, else b; the derivative is the selected branch's.")
floor = define(
    "floor", numpy=np.floor,
    kernel="np.floor({0})",
    grad=lambda y, x: [sympy.S.Zero],
    doc="The largest integer <= x; floor'(x) = 0.")
mod = define(
    "mod", arity=2, numpy=lambda a, b: a - b * np.floor(a / b),
    kernel="{0} - {1} * np.floor({0} / {1})",
    grad=lambda y, a, b: [sympy.S.One, -floor(a / b)],
    doc="a - b * floor(a / b): the remainder with the sign of b, as Python's a % b.")
sin = define(
    "sin", numpy=np.sin,
    kernel="np.sin({0})",
    grad=lambda y, x: [cos(x)],
    doc="Sine.")
cos = define(
    "cos", numpy=np.cos,
    kernel="np.cos({0})",
    grad=lambda y, x: [-sin(x)],
    doc="Cosine.")
logsigmoid = define(
    "logsigmoid", numpy=lambda x: -np.logaddexp(0.0, -x),
    kernel="np.minimum({0}, T(0)) - np.log1p(np.exp(-np.abs({0})))",
    grad=lambda y, x: [sigmoid(-x)],
    doc="log(sigmoid(x)) = -softplus(-x), computed without overflow.")
silu = define(
    "silu", numpy=lambda x: x * _np_sigmoid(x),
    kernel="{0} * sigmoid({0})",
    fast32="return x * (T(0.5) + T(0.5) * _tanh_f32(T(0.5) * x))",
    grad=lambda y, x: [sigmoid(x) * (1 + x * (1 - sigmoid(x)))],
    doc="x * sigmoid(x) (swish).")
