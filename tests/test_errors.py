"""Malformed specs: each gives a SpecError naming the file, the line, and a fix."""
import pytest

from cellc import SpecError
from cellc.driver import compile_bytes

HEADER = '''name = "cell"
inputs = ["x"]
states = ["h"]
parameters = ["W", "U", "b"]
equations = """
'''


def spec(equations, extra="", header=HEADER):
    return (header + equations + '\n"""\n' + extra).encode()


GOOD = "h' = tanh(x @ W + h @ U + b)"

# (id, spec bytes, line or None, substrings the message must contain)
CATALOGUE = [
    ("unknown-function", spec("h' = tanhh(x @ W + h @ U + b)"), 6,
     ["unknown function `tanhh`", "Did you mean `tanh`", "fix:"]),
    ("undefined-symbol", spec("h' = tanh(x @ W + h @ U + bb)"), 6,
     ["`bb` is never defined", "Did you mean `b`", "declare it"]),
    ("cycle", spec("a = tanh(h @ U + q)\nq = sigmoid(a) + x @ W\nh' = a + b"), 6,
     ["cyclic definition", "a -> q -> a"]),
    ("state-never-updated", spec(GOOD, header=HEADER.replace('["h"]', '["h", "c"]')), 3,
     ["state `c` is never updated", "c' = ..."]),
    ("shape-mismatch", spec("h' = tanh(x + h @ U + b) + 0 * (x @ W)"), 6,
     ["shape mismatch", "size I", "size H"]),
    ("invalid-identifier", spec(GOOD, header=HEADER.replace('"W", "U"', '"W", "U-1"')), 4,
     ["'U-1' is not a valid name"]),
    ("reserved-name", spec("lambda_ = 1\n" + GOOD), 6, []),
    ("keyword-name", spec("class = tanh(h @ U)\n" + GOOD), 6, ["cannot parse"]),
    ("double-underscore", spec("a__b = tanh(h @ U)\nh' = a__b + x @ W + b"), 6,
     ["reserves"]),
    ("defined-twice", spec("a = tanh(h @ U)\na = sigmoid(h @ U)\nh' = a + x @ W + b"), 7,
     ["`a` is defined twice (first on line 6)"]),
    ("state-updated-twice", spec(GOOD + "\n" + GOOD), 7, ["`h'` is defined twice"]),
    ("assign-to-state", spec("h = tanh(x @ W)\n" + GOOD), 6, ["write `h' = ...`"]),
    ("prime-on-non-state", spec("x' = tanh(h @ U)\n" + GOOD), 6, ["only a state has a new value"]),
    ("left-multiplication", spec("h' = tanh(W @ x + h @ U + b)"), 6, ["row vectors", "v @ W"]),
    ("matmul-by-non-param", spec("h' = tanh(x @ W + h @ h + b) + 0 * (h @ U)"), 6,
     ["on the right of @ is not a parameter"]),
    ("vector-and-matrix", spec("h' = tanh(x @ W + h @ U + b + W)"), 6, ["used as a matrix"]),
    ("variable-exponent", spec("h' = tanh(x @ W + h @ U + b) ** h"), 6, ["must be a number"]),
    ("syntax-error", spec("h' = tanh(x @ W + h @ U + b"), 6, ["cannot parse equation"]),
    ("juxtaposition", spec("h' = tanh(x W + h @ U + b)"), 6,
     ["`x W` puts two values side by side", "`x @ W` for a matrix product"]),
    ("juxtaposition-after-call", spec("h' = tanh(x @ W + h @ U + b) 2"), 6,
     ["side by side", "join them with an operator"]),
    ("unsupported-syntax-lists-reductions", spec("h' = tanh(x @ W + h @ U + b) << h"), 6,
     ["mean", "var", "sum", "tanh", "where", "a if c else b"]),
    ("caret-is-not-a-power", spec("h' = tanh(x @ W + h @ U + b) ^ 2"), 6,
     ["`^`", "write a power as `a ** b`"]),
    ("logic-of-values", spec("h' = where(h and b, h, tanh(x @ W + h @ U + b))"), 6,
     ["`h` is not a comparison", "combine comparisons"]),
    ("where-arity", spec("h' = where(h > 0, tanh(x @ W + h @ U + b))"), 6,
     ["`where` takes 3 argument(s)", "where(c, a, b)"]),
    ("mod-by-zero", spec("h' = tanh(x @ W + h @ U + b) % 0"), 6, ["division by zero"]),
    ("floor-division-by-zero", spec("h' = tanh(x @ W + h @ U + b) // 0.0"), 6,
     ["division by zero"]),
    ("comparison-shapes", spec("h' = where(x > h, h, tanh(x @ W + h @ U + b))"), 6,
     ["shape mismatch", "size I vs size H"]),
    ("not-an-equation", spec("tanh(x @ W)\n" + GOOD), 6, ["expected an equation"]),
    ("chained-is-not-a-comparison", spec("h' = tanh(x @ W + h @ U + b) * (h in b)"), 6,
     ["`In` is not a comparison of numbers", "< <= > >= == !="]),
    ("attribute", spec("h' = np.tanh(x @ W + h @ U + b)"), 6, ["unknown function"]),
    ("string-constant", spec("h' = tanh(x @ W + h @ U + b) * \"a\""), 6,
     ['`"` is not part of the language']),
    ("unused-parameter", spec(GOOD, header=HEADER.replace('"b"]', '"b", "V"]')), 4,
     ["parameter `V` is declared but never used"]),
    ("unused-node", spec("a = tanh(h @ U)\n" + GOOD), 6, ["`a` is computed but never used"]),
    ("constant-state-update", spec("h' = 2 * 3"), 6, ["is a constant", "needs a vector"]),
    ("unused-named-constant", spec("dt = 0.5\n" + GOOD), 6, ["`dt` is computed but never used"]),
    ("output-a-constant", spec("dt = 0.5\nh' = dt * tanh(x @ W + h @ U + b)", 'output = "dt"\n'),
     9, ["output `dt` is a constant"]),
    ("named-constant-out-of-range", spec("a = 1e30\nk = a * a\nh' = k * tanh(x @ W + h @ U + b)"),
     7, ["not a finite real number in range"]),
    ("wrong-arity", spec("h' = max(x @ W + h @ U + b)"), 6, ["takes 2 argument"]),
    ("division-by-zero", spec("h' = tanh(x @ W + h @ U + b) / 0"), 6, ["division by zero"]),
    ("output-undefined", spec(GOOD, 'output = "y"\n'), 8, ["output `y` is not defined"]),
    ("unknown-field", spec(GOOD, 'outptu = "h"\n'), 8, ["unknown field `outptu`",
                                                        "Did you mean `output`"]),
    ("missing-field", b'name = "cell"\ninputs = ["x"]\nstates = ["h"]\n', None,
     ["missing field `parameters`"]),
    ("wrong-type", spec(GOOD, header=HEADER.replace('states = ["h"]', 'states = 3')), 3,
     ["`states` must be a list or a table, not int"]),
    ("bad-toml", b'name = "cell\n', 1, ["not valid TOML"]),
    ("empty-file", b"   \n", None, ["spec is empty"]),
    ("non-utf8", b'name = "\xff\xfe"\n', 1, ["not valid UTF-8"]),
    ("huge-file", b"# " + b"x" * 300_000 + b"\n", None, ["larger than the limit"]),
    ("deep-nesting", spec("h' = " + "tanh(" * 80 + "x @ W + h @ U + b" + ")" * 80), 5,
     ["nested more than"]),
    ("unresolved-shape", spec(GOOD + "\ny = h' @ V + c", 'output = "y"\n',
                              header=HEADER.replace('"b"]', '"b", "V", "c"]')), 4,
     ["cannot infer the size"]),
    ("bad-init", spec(GOOD, '[init]\nb = "gaussian"\n'), 9, ["cannot read 'gaussian'"]),
    ("init-unknown-param", spec(GOOD, '[init]\nbq = 1.0\n'), 9, ["not a parameter",
                                                               "Did you mean `b`"]),
    ("duplicate-declaration", spec(GOOD, header=HEADER.replace('"W", "U"', '"W", "h"')), 4,
     ["`h` is declared twice"]),
    ("injection-name", spec(GOOD, header=HEADER.replace('"cell"', '"__import__(\'os\')"')), 1,
     ["is not a valid name"]),
    ("look-alike-in-equation", spec("h' = tanh(x @ W + \uff48 @ U + b)"), 6,
     ["non-ASCII character", "U+FF48"]),
    ("look-alike-name", spec(GOOD, header=HEADER.replace('"U"', '"\u0423"')), 4,
     ["is not a valid name"]),
    ("value-named-like-a-dimension", spec("H = tanh(x @ W + h @ U + b)\nh' = H"), 6,
     ["`H` names both a dimension and a value"]),
    ("shape-of-three", spec(GOOD, extra='[shapes]\nb = ["H", "H", "H"]\n'), 8,
     ["shape of `b` must be a list of at most two dimension names", "b = [] for a scalar"]),
    ("weight-expression-of-a-value", spec("h' = tanh(x @ W + h @ (U - h) + b)"), 6,
     ["`h` in the weight expression `U - h` is not a parameter", "eye(D), .T"]),
    ("weight-expression-of-a-vector", spec("h' = tanh(x @ W + b + h @ (U * b))"), 6,
     ["`b` is a vector, used in the weight expression `U * b`", "b = [] for a scalar"]),
    ("vector-after-weight-expression", spec("h' = tanh(x @ W + h @ (U * b) + b)"), 6,
     ["parameter `b` is used as a matrix elsewhere but as a vector here"]),
    ("weight-expression-plus-a-number", spec("h' = tanh(x @ W + h @ (U + 1) + b)"), 6,
     ["write c * eye(H)"]),
    ("weight-expression-not-square", spec("h' = tanh(x @ W + h @ (W - W.T) + b)"), 6,
     ["shape mismatch", "size I vs size H"]),
    ("eye-of-a-value", spec("h' = tanh(x @ W + h @ (U - eye(h)) + b)"), 6,
     ["eye takes one dimension", "eye(H)"]),
    ("character-in-a-name", spec("h~ = tanh(x @ W + h @ U + b)\nh' = h~"), 6,
     ["`~` is not part of the language and cannot be part of a name", "h_tilde"]),
    ("function-name-as-value", spec("where = tanh(x @ W + h @ U + b)\nh' = where"), 6,
     ["is reserved: a Python keyword or one of the language's functions"]),
    ("keyword-as-dimension", spec(GOOD, header=HEADER.replace('states = ["h"]',
                                                              'states = {h = "None"}')),
     3, ["is reserved"]),
    ("cell-named-as-a-module", spec(GOOD, header=HEADER.replace('name = "cell"', 'name = "os"')),
     1, ["would shadow"]),
    ("summary-not-text", spec(GOOD, header=HEADER.replace('name = "cell"',
                                                          'name = "cell"\nsummary = 3')), 2,
     ["`summary` must be"]),
    ("torch-wrong-type", spec(GOOD, '[torch]\nmodule = "RNN"\nW = 3\n'), 10,
     ["must be a string"]),
    # numbers that are not numbers: refused at their line, before SymPy computes them
    *[(f"constant-{k}", spec(f"h' = tanh(x @ W + h @ U + b) * {c}"), 6, [needle])
      for k, (c, needle) in enumerate([
          ("2 ** 2 ** 2 ** 2 ** 2 ** 2", "out of range"), ("10 ** 10 ** 8", "out of range"),
          ("(-10) ** 10 ** 8", "out of range"), ("0.5 ** 10 ** 8", "out of range"),
          ("0 ** -1", "not a finite"), ("(-1) ** 0.5", "not a finite"),
          ("1e30 * 1e30", "not a finite"), ("1e-30 * 1e-30", "not a finite"),
          ("9" * 400, "out of range"), ("1e39", "out of range"), ("1e-300", "out of range"),
          ("2 ** 200", "not a finite"), ("(1 / 3) ** -200", "out of range"),
          ("(1 / 0.0)", "division by zero"), ("0 ** -0.5", "not a finite")])],
    ("constant-in-derivative", spec("h' = tanh(x @ W + h @ U + b) + 3e38 * h ** 2"), 6,
     ["derivative of `h'` in `h`", "out of range"]),
    ("init-not-finite", spec(GOOD, '[init]\nW = "normal(0, 1e400)"\n'), 9, ["out of range"]),
    ("init-huge-integer", spec(GOOD, "[init]\nW = " + "9" * 400 + "\n"), 9, ["out of range"]),
    ("init-huge-toml-integer", spec(GOOD, "[init]\nW = " + "9" * 5000 + "\n"), 9,
     ["not valid TOML"]),
    ("init-orthogonal-vector", spec(GOOD, '[init]\nb = "orthogonal"\n'), 9,
     ["orthogonal applies to a matrix"]),
    ("init-negative-std", spec(GOOD, '[init]\nW = "normal(0, -1)"\n'), 9,
     ["negative standard deviation"]),
    ("init-uniform-reversed", spec(GOOD, '[init]\nW = "uniform(1, -1)"\n'), 9,
     ["wrong way round"]),
    ("init-a-list", spec(GOOD, '[init]\nW = [1, 2]\n'), 9, ["cannot read a list"]),
    ("torch-module-a-list", spec(GOOD, '[torch]\nmodule = ["LSTM"]\n'), 9,
     ["needs `module`"]),
    ("torch-nonlinearity-a-table", spec(GOOD, '[torch]\nmodule = "RNN"\nnonlinearity = {a = 1}\n'),
     10, ["not a torch.nn.RNN option"]),
    ("long-name", spec(GOOD, header=HEADER.replace('"cell"', '"' + "a" * 240 + '"')), 1,
     ["240 characters long; names have at most 40"]),
    ("toml-nested-too-deeply", spec(GOOD, "summary = " + "[" * 100000 + "]" * 100000 + "\n"),
     None, ["nested too deeply"]),
    ("toml-table-nested-too-deeply", spec(GOOD, "[init]\nW = " + "{a = " * 5000 + "1"
                                          + "}" * 5000 + "\n"), None, ["nested too deeply"]),
    ("torch-huge-block", spec(GOOD, '[torch]\nmodule = "RNN"\nW = "weight_ih[' + "9" * 5000
                              + '].T"\n'), 10, ["cannot read"]),
    ("init-a-date", spec(GOOD, '[init]\nW = 1979-05-27\n'), 9, ["cannot read a date"]),
    ("init-nan", spec(GOOD, '[init]\nW = nan\n'), 9, ["out of range"]),
    ("shape-of-ints", spec(GOOD, '[shapes]\nW = [1, 2]\n'), 8, ["must be a string name"]),
    # bounded work
    ("too-many-equations", spec("\n".join(f"a{k} = tanh(h @ U) * {k}" for k in range(101))
                                + "\nh' = a0 + x @ W + b"), 106, ["more than 100 equations"]),
    ("too-many-terms", spec("h' = tanh(x @ W + h @ U + b) + " + " + ".join(["h * h"] * 800)),
     6, ["more than 1200 terms"]),
    # reductions (mean, var, sum over a vector's units)
    ("mean-of-constant", spec("m = mean(2)\nh' = tanh(x @ W + h @ U + b) * m"), 6,
     ["argument of `mean` is a constant", "reduces a vector"]),
    ("var-of-scalar", spec("m = var(mean(h))\nh' = tanh(x @ W + h @ U + b) * m"), 6,
     ["already one number per row"]),
    ("constant-times-matrix", spec("h' = tanh(x @ W + (2 * 3) @ U + b + h)"), 6,
     ["left operand of `(2 * 3) @ U` is a constant", "vector expression"]),
    ("reduction-takes-one", spec("h' = tanh(x @ W + h @ U + b) * sum(h, h)"), 6,
     ["`sum` takes one vector"]),
    ("reductions-over-two-sizes", spec("m = mean(x) + mean(h)\nh' = tanh(x @ W + h @ U + b) * m",
                                       header=HEADER.replace('["x"]', '{x = "I"}')), 6,
     ["combines reductions over different dimensions (H, I)"]),
]


@pytest.mark.parametrize("case", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_malformed_spec_gives_clear_error(case):
    _, raw, line, needles = case
    with pytest.raises(SpecError) as info:
        compile_bytes(raw, "specs/cell.toml")
    err = info.value
    text = str(err)
    assert text.startswith("specs/cell.toml"), text
    assert err.line == line, text
    if line is not None:
        assert text.startswith(f"specs/cell.toml:{line}"), text
    assert "fix:" in text or "Did you mean" in text, text
    for needle in needles:
        assert needle in text, text
    assert "Traceback" not in text


def test_catalogue_is_large():
    assert len(CATALOGUE) >= 30


def test_messages_are_bounded_whatever_the_spec_holds():
    """A 200,000-character name or number is cut in the message, not printed whole."""
    for raw in (spec(GOOD, "[init]\n" + "a" * 200000 + " = 1\n"),
                spec(GOOD, '[init]\nW = "normal(0, ' + "9" * 5000 + ')"\n'),
                spec("h' = tanh(x @ W + h @ U + b) * " + "9" * 4000)):
        with pytest.raises(SpecError) as info:
            compile_bytes(raw, "specs/cell.toml")
        assert len(str(info.value)) < 1200, str(info.value)[:2000]
