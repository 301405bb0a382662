"""Weight expressions: matrices a spec builds from its parameters, `h @ (W - W.T)`.

Papers build recurrent matrices from parameters: antisymmetric weights `W - W.T -
gamma * eye(H)`, low-rank factors `U @ V`, masked weights `W * M`, a weight shared
transposed `x @ W.T`. Such a matrix depends on parameters only, so it is computed once
per call, before the time loop, and the rest of the compiler sees it as one more weight
(a parameter named `naming.weight_expression(k)`, with `Param.derived` holding the
expression). Its gradient comes back as any weight's does, after the loop; `pullback`
then sends it to the parameters it was made from, by the rules of each node below
(for `W - W.T` that is `dA - dA.T`).

The nodes are plain values, shared by the interpreter (which evaluates them with NumPy)
and the back end (which prints them as NumPy statements of the drivers). Scalars inside
(`gamma`, `1 - beta`, numbers) are SymPy expressions over scalar parameters.
"""
from __future__ import annotations

from typing import NamedTuple, Union

import sympy


class Ref(NamedTuple):
    """A matrix: a parameter, or (in a pullback) the gradient being pulled back."""

    name: str


class Eye(NamedTuple):
    """The identity of dimension `dim`."""

    dim: str


class Transposed(NamedTuple):
    a: "Matrix"


class Plus(NamedTuple):
    a: "Matrix"
    b: "Matrix"


class Scaled(NamedTuple):
    """A scalar (SymPy, over scalar parameters and numbers) times a matrix."""

    scale: sympy.Expr
    a: "Matrix"


class Hadamard(NamedTuple):
    """The elementwise product of two matrices of one shape."""

    a: "Matrix"
    b: "Matrix"


class Product(NamedTuple):
    """The matrix product a @ b."""

    a: "Matrix"
    b: "Matrix"


class Total(NamedTuple):
    """The sum of all of a matrix's elements: a scalar (a scalar parameter's gradient)."""

    a: "Matrix"


Matrix = Union[Ref, Eye, Transposed, Plus, Scaled, Hadamard, Product]


def scaled(scale: sympy.Expr, m):
    """`scale * m`, or `m` itself when the scale is 1."""
    return m if scale == 1 else Scaled(scale, m)


def sources(m) -> list[str]:
    """The parameters `m` reads, matrices and scalars, in order of first use."""
    out: dict[str, None] = {}

    def walk(m):
        if isinstance(m, Ref):
            out[m.name] = None
        elif isinstance(m, Scaled):
            out.update(dict.fromkeys(sorted(s.name for s in m.scale.free_symbols)))
            walk(m.a)
        elif not isinstance(m, Eye):
            for part in m:
                walk(part)
    walk(m)
    return list(out)


def pullback(m, grad) -> list[tuple[str, object]]:
    """(parameter, its share of the gradient) for the gradient `grad` of matrix `m`: a
    matrix expression for a matrix parameter, a `Scaled(c, Total(...))` for a scalar one.
    Shares of one parameter are summed by the caller."""
    if isinstance(m, Ref):
        return [(m.name, grad)]
    if isinstance(m, Eye):
        return []
    if isinstance(m, Transposed):
        return pullback(m.a, Transposed(grad))
    if isinstance(m, Plus):
        return pullback(m.a, grad) + pullback(m.b, grad)
    if isinstance(m, Scaled):
        out = pullback(m.a, scaled(m.scale, grad))
        for s in sorted(m.scale.free_symbols, key=lambda s: s.name):
            out.append((s.name, scaled(sympy.diff(m.scale, s), Total(Hadamard(grad, m.a)))))
        return out
    if isinstance(m, Hadamard):
        return pullback(m.a, Hadamard(grad, m.b)) + pullback(m.b, Hadamard(grad, m.a))
    if isinstance(m, Product):
        return (pullback(m.a, Product(grad, Transposed(m.b)))
                + pullback(m.b, Product(Transposed(m.a), grad)))
    raise TypeError(f"not a weight expression: {m!r}")


def text(m) -> str:
    """`m` as a spec writes it: `W - W.T - gamma * eye(H)` reads `W + -1*W.T + ...`."""
    if isinstance(m, Ref):
        return m.name
    if isinstance(m, Eye):
        return f"eye({m.dim})"
    if isinstance(m, Transposed):
        inner = text(m.a)
        return f"{inner}.T" if isinstance(m.a, Ref) else f"({inner}).T"
    if isinstance(m, Plus):
        if isinstance(m.b, Scaled) and m.b.scale.could_extract_minus_sign():
            return f"{text(m.a)} - {text(scaled(-m.b.scale, m.b.a))}"
        return f"{text(m.a)} + {text(m.b)}"
    if isinstance(m, Scaled):
        inner = text(m.a)
        inner = inner if isinstance(m.a, (Ref, Eye, Transposed, Total)) else f"({inner})"
        return f"-{inner}" if m.scale == -1 else f"{sympy.sstr(m.scale)} * {inner}"
    if isinstance(m, (Hadamard, Product)):
        op = " * " if isinstance(m, Hadamard) else " @ "
        parts = [text(p) if isinstance(p, (Ref, Eye, Transposed)) else f"({text(p)})" for p in m]
        return op.join(parts)
    if isinstance(m, Total):
        return f"sum({text(m.a)})"
    raise TypeError(f"not a weight expression: {m!r}")
