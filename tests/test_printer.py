"""The Numba printer, exact strings on small trees: literals keep the kernel's dtype,
powers print without repeated work, views and statements print as written, a kernel's
grouped parameters become tuples, and what the printer does not know is refused."""
import pytest
import sympy

from cellc.backend import tree as t
from cellc.backend.numba import printer as P
from cellc.ir.cell import size_symbol, symbol
from cellc.ir.functions import FUNCTIONS

x, y = symbol("x"), symbol("y")
H, T, B = (sympy.Symbol(n, integer=True, positive=True) for n in "HTB")
j, r, step, n = (sympy.Symbol(s, integer=True) for s in ("j__", "r__", "t", "n__"))
sigmoid, sqrt = FUNCTIONS["sigmoid"], FUNCTIONS["sqrt"]


@pytest.mark.parametrize("expr,text", [
    (x * sympy.Float(0.5), "real(0.5)*x"),
    (x / 3, "x / real(3)"),
    (x ** 2, "x*x"),
    ((x + y) ** -2, "real(1) / ((x + y)*(x + y))"),
    ((x + y) ** sympy.Rational(3, 2), "(x + y)*np.sqrt(x + y)"),
    ((x + y) ** sympy.Rational(-3, 2), "real(1) / ((x + y)*np.sqrt(x + y))"),
    (x / size_symbol("H"), "x / real(H)"),
    (sigmoid(x) * (1 - sigmoid(x)), "(real(1) - _sigmoid(x))*_sigmoid(x)"),
    (1 / sqrt(y), "real(1) / _sqrt(y)"),
    (sympy.Integer(2) ** 70 * x, "real(1.1805916207174113e+21)*x"),
    (x / (2 * y), "x / (real(2)*y)"),
    (t.Element.of("_d__h", (r, j)) + t.Element.of("dyt__", (r, j)), "_d__h[r__, j__] + dyt__[r__, j__]"),
])
def test_kernel_expressions(expr, text):
    assert P.real(expr) == text


def test_indices_and_views():
    assert P.index(3 * H + j) == "3*H + j__"
    assert P.index(sympy.Mod(step + 1, 2)) == "(t + 1) % 2"
    assert P.index(T - 1) == "T - 1"
    mm = t.Array("_mm__x", (T, B, 4 * H))
    h = t.Array("_h", (T + 1, B, H))
    assert P.view(t.View(mm, steps=(0, T), flat=True)) == "_mm__x.reshape(B*T, 4*H)"
    assert P.view(t.View(mm, step=step, rows=n)) == "_mm__x[t][:n__]"
    assert P.view(t.View(mm, cols=(H, H))) == "_mm__x[..., H:2*H]"
    assert P.view(t.View(t.Array("_d__w__x", (H, 4 * H)), cols=(0, H))) == "_d__w__x[:, :H]"
    assert P.view(t.View(h, steps=(1, T + 1), flat=True, transposed=True)) == \
        "_h[1:].reshape(B*T, H).T"
    assert P.view(t.View(h, steps=(0, T))) == "_h[:T]"


def test_statements():
    mm = t.Array("_mm__x", (T, B, 4 * H))
    body = [t.Loop(step, T, (
        t.Assign(n, t.Element.of("active__", (step,))),
        t.Gemm(t.View(t.Array("_h", (T + 1, B, H)), step=step, rows=n),
               t.View(t.Array("_w__h", (H, 4 * H))), t.View(mm, step=step, rows=n), True),
        t.If(sympy.StrictLessThan(n, B), (t.Fill(t.View(mm, step=step), sympy.S.Zero, n),)),
    ), "steps", reverse=True)]
    assert P.statements(body) == [
        "for t in range(T - 1, -1, -1):",
        "    n__ = active__[t]",
        "    _gemm(_h[t][:n__], _w__h, _mm__x[t][:n__], True)",
        "    if n__ < B:",
        "        _mm__x[t][n__:] = 0",
    ]
    assert P.statements([t.Concat(t.Array("_w__h", (H, 2 * H)),
                                  (t.View(t.Array("_W_a", (H, H))), t.View(t.Array("_W_b", (H, H)))))]) == \
        ["_w__h = np.concatenate((_W_a, _W_b), axis=1, out=_empty((H, 2*H), dtype))"]
    assert P.statements([t.Comment("a\nb\x1b[2J\u202e")]) == ["# a\\nb\\x1b[2J\\u202e"]


def test_a_kernel_with_grouped_parameters():
    """A kernel's arrays come in groups, each passed as one tuple and unpacked first;
    literals take the dtype of its first array."""
    b = t.Array("_b", (H,))
    c = t.Array("_c", (T + 1, B, H))
    params = (t.Param("rows__", "scalar"), t.Param("H", "size"), t.Param("_b", "vectors"),
              t.Param("_c", "reads"), t.Param("_new__c", "writes"))
    unit = t.Loop(j, H, (t.Comment("c' = b * c + 1"),
                         t.Assign(symbol("b"), t.Element.of("_b", (j,))),
                         t.Assign(symbol("c"), t.Element.of("_c", (r, j))),
                         t.Assign(symbol("new__c"), symbol("b") * symbol("c") + 1),
                         t.Assign(t.Element.of("_new__c", (r, j)), symbol("new__c"))), "units")
    kernel = t.Function("_fwd__step1", "kernel", params,
                        (t.Loop(r, sympy.Symbol("rows__"), (unit,), "rows"),),
                        doc="Forward of c'.", dtype_of="_b")
    assert P.function(kernel) == '''\
@nb.njit(**_JIT)
def _fwd__step1(rows__, H, vectors__, reads__, writes__):
    """Forward of c'."""
    _b, = vectors__
    _c, = reads__
    _new__c, = writes__
    real = _b.dtype.type
    for r__ in range(rows__):
        for j__ in range(H):
            # c' = b * c + 1
            b = _b[j__]
            c = _c[r__, j__]
            new__c = real(1) + b*c
            _new__c[r__, j__] = new__c'''
    call = t.Call("_fwd__step1", tuple(zip(params, (n, H, t.View(b), t.View(c, step=step),
                                                    t.View(c, step=step + 1)))))
    assert P.statements([call]) == ["_fwd__step1(n__, H, (_b,), (_c[t],), (_c[t + 1],))"]


def test_the_printer_refuses_what_it_does_not_know():
    with pytest.raises(TypeError, match="cannot print Integral"):
        P.real(sympy.Integral(x, x))
    for number in (sympy.zoo, sympy.oo, sympy.nan, sympy.I * x):
        with pytest.raises(TypeError, match="cannot print"):
            P.real(number)
    with pytest.raises(TypeError, match="cannot print a str"):
        P.statements(["pass"])
