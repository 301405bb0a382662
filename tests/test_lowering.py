"""Cells that broke the back end when it pasted strings, constants that are not real
numbers, and the shape of what the back end makes: kernels take a handful of grouped
arguments, nothing in the back end reads back text it printed."""
import re
from pathlib import Path

import numpy as np
import pytest
from cellcheck import build, compare

from cellc import SpecError
from cellc.driver import compile_bytes

ROOT = Path(__file__).resolve().parent.parent


def spec(equations: str, parameters: list, inputs='["x"]', states='["h"]') -> str:
    quoted = ", ".join(f'"{p}"' for p in parameters)
    return (f'name = "cell"\ninputs = {inputs}\nstates = {states}\nparameters = [{quoted}]\n'
            f'equations = """\n{equations}\n"""\n')


CELLS = {
    # an input used elementwise and through a product: `d(x) += ...` was printed onto a
    # reshape() call, a SyntaxError (I = H, then I != H)
    "input elementwise and in a product": spec("h' = x @ W + x * h", ["W"], inputs='{x = "H"}'),
    "input in a product of a product": spec("h' = tanh((x * (h @ V)) @ W2 + x @ W + h @ U)",
                                            ["W", "W2", "U", "V"]),
    # a sum over the input's width feeding an H-wide state: the I-wide backward kernel
    # was printed `d__reduce__in__sum = ` and called before the kernel making it
    "sum over another width": spec("h' = tanh(h @ U) + sum(x * (h @ V))", ["U", "V"]),
    "widths feeding each other": spec("s1 = sum(h * h)\ns2 = sum(x * s1 * (x @ V))\n"
                                      "h' = tanh(h @ U + x @ W) + s2 * h", ["U", "V", "W"]),
    "mean over another width": spec("g = sigmoid(h @ P + 0.5 * mean(tanh(h)) + b)\n"
                                    "h' = tanh(g @ Q)", ["P", "b", "Q"])
    + '[shapes]\nP = ["H", "M"]\n',
    "a previous state nothing reads": spec("h' = tanh(x @ W + c @ U)\nc' = sigmoid(x @ V)",
                                           ["W", "U", "V"], states='["h", "c"]'),
    "an output that is a product": spec("h' = tanh(x @ W + h @ U)\ny = h' @ V", ["W", "U", "V"])
    + 'output = "y"\n[shapes]\nV = ["H", "Q"]\n',
}


@pytest.mark.parametrize("text", CELLS.values(), ids=CELLS.keys())
def test_cells_the_string_back_end_broke(text, tmp_path):
    module, cell = build(text, tmp_path)
    sizes = {"I": 3, "H": 4, "M": 5, "Q": 2}
    for which in ("both", "outputs", "states"):
        errors = compare(module, cell, T=4, B=3, sizes={d: sizes[d] for d in module.DIMS},
                         dtype=np.float64, seed=2, which=which)
        assert max(errors.values()) < 1e-12, errors


@pytest.mark.parametrize("constant", ["0 ** -1", "(-1) ** 0.5", "1e300 * 1e300", "10 ** 400",
                                      "1 / 0.0", "1 / (2 - 2)"])
def test_constants_that_are_not_real_numbers_are_refused_at_their_line(constant):
    text = spec(f"g = tanh(x @ W)\nh' = g * ({constant}) + h", ["W"])
    with pytest.raises(SpecError) as info:
        compile_bytes(text.encode(), "cell.toml")
    assert info.value.line == 7 and info.value.path == "cell.toml", str(info.value)


def test_integers_past_int64_print_as_floats(tmp_path):
    module, cell = build(spec("h' = tanh(x @ W) * 99999999999999999999999 + h", ["W"]), tmp_path)
    errors = compare(module, cell, T=2, B=2, sizes={"I": 3, "H": 4}, dtype=np.float64, seed=1)
    assert max(errors.values()) < 1e-12


def test_kernels_take_a_handful_of_grouped_arguments():
    """A kernel gets its rows, its sizes and at most three tuples of arrays (vectors,
    reads, writes), however many values it touches (ln_lstm's step kernel: 41)."""
    for path in sorted((ROOT / "specs").glob("*.toml")):
        source = compile_bytes(path.read_bytes(), path.name).source
        for name, args in re.findall(r"^def (_(?:fwd|bwd|inf)__\w+)\((.*)\):", source, re.M):
            groups = [a for a in args.split(", ") if a.endswith("__") and a != "rows__"]
            assert set(groups) <= {"vectors__", "reads__", "writes__"}, (path.name, name, args)
            assert len(args.split(", ")) <= 6, (path.name, name, args)


def test_the_back_end_never_reads_back_what_it_printed():
    """Nothing in cellc/backend parses, splits or searches text: code is built as a tree
    and printed once. (runtime.py is the generated modules' run-time support, not part of
    the compiler.)"""
    for path in sorted((ROOT / "cellc" / "backend").rglob("*.py")):
        if path.name == "runtime.py":
            continue
        text = path.read_text(encoding="utf-8")
        found = re.findall(r"\bast\.parse\b|\bimport ast\b|\bimport re\b|\.split\(|\.partition\(",
                           text)
        assert not found, (path.name, found)
