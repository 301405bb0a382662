"""Fuzzing the spec parser and the compiler's front end (spec → IR → passes → source).

Inputs are random bytes, random text, and mutations of the shipped specs (cut, splice,
duplicate or swap lines, insert tokens the parser cares about). Whatever comes in, the
only exception allowed out is `SpecError`, and every example finishes within the
Hypothesis deadline (the spec size, nesting and line count are bounded up front).

CELLC_FUZZ_EXAMPLES sets the examples per test (default 150; the note on issue 5
quotes a run with 5000).
"""
import os
import re
from datetime import timedelta

from conftest import SPECS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellc import SpecError
from cellc.driver import compile_bytes
from cellc.ir.functions import FUNCTIONS

EXAMPLES = int(os.environ.get("CELLC_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=20), derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SHIPPED = [p.read_bytes() for p in SPECS]
TOKENS = [b"(", b")", b"[", b"]", b"{", b"}", b"@", b"'", b'"', b'"""', b"=", b"==", b"\n",
          b"#", b"*", b"**", b"/", b"-", b"+", b",", b".", b":", b"\\", b" ", b"\t",
          b"tanh(", b"sigmoid(", b"exp(", b"log(", b"max(", b"relu(", b"softplus(",
          b"h'", b"c'", b"h", b"x", b"W", b"b", b"H", b"I", b"0", b"1", b"-1", b"1e309",
          b"1e-400", b"0.5", b"2**64", b"nan", b"inf", b"lambda", b"import os", b"__class__",
          b"[init]", b"[shapes]", b"[torch]", b"output = ", b"states = ", b"name = ",
          b'parameters = ["W"]', b"\xff", b"\x00", "ｈ".encode(), "\u202e".encode(),
          # numbers and nesting that once hung or escaped as other exceptions (issue 14)
          b"2 ** 2 ** 2 ** 2 ** 2 ** 2", b"10 ** 10 ** 8", b"0 ** -1", b"(-1) ** 0.5",
          b"9" * 400, b"1e-50", b"[" * 3000, b"{a = " * 500, b'"normal(0, 1e400)"',
          b'"orthogonal"', b'[init]\nb = ', b'module = ["LSTM"]', b"1979-05-27"]


def front_end(raw: bytes) -> None:
    try:
        compile_bytes(raw, "fuzz.toml")
    except SpecError as err:
        text = str(err)
        assert text.startswith("fuzz.toml") and "Traceback" not in text, text


@st.composite
def mutated_spec(draw):
    raw = bytearray(draw(st.sampled_from(SHIPPED)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["insert", "delete", "replace", "dup-line", "swap-lines"]))
        at = draw(st.integers(0, len(raw)))
        if kind == "insert":
            raw[at:at] = draw(st.sampled_from(TOKENS))
        elif kind == "delete":
            del raw[at:at + draw(st.integers(1, 40))]
        elif kind == "replace" and at < len(raw):
            raw[at] = draw(st.integers(0, 255))
        else:
            lines = bytes(raw).split(b"\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            if kind == "dup-line":
                lines.insert(j, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            raw = bytearray(b"\n".join(lines))
    return bytes(raw)


@st.composite
def mutated_equations(draw):
    """A shipped spec whose equations are edited token by token (names swapped,
    operators and functions changed, terms and lines dropped or repeated): these pass
    the TOML and Python parsers and exercise shapes, cycles, derivatives and codegen."""
    raw = draw(st.sampled_from(SHIPPED)).decode()
    head, rest = raw.split('equations = """', 1)
    body, tail = rest.split('"""', 1)
    tokens = re.findall(r"[A-Za-z_]\w*'?|\d+\.?\d*(?:e-?\d+)?|\*\*|\S|\n", body)
    names = sorted({t for t in tokens if re.match(r"[A-Za-z_]", t)} - set(FUNCTIONS))
    like = [names, sorted(FUNCTIONS), ["+", "-", "*", "/", "**", "@"], ["0", "2", "0.5", "1e3"]]
    for _ in range(draw(st.integers(1, 4))):
        if not tokens:
            break
        at = draw(st.integers(0, len(tokens) - 1))
        kind = draw(st.sampled_from(["swap", "swap", "swap", "drop", "repeat", "any"]))
        if kind == "swap":            # a token for another of its kind: mostly parses
            group = next((g for g in like if tokens[at] in g), [tokens[at]])
            tokens[at] = draw(st.sampled_from(group))
        elif kind == "drop":
            del tokens[at:at + draw(st.integers(1, 3))]
        elif kind == "repeat":
            lines = " ".join(tokens).split("\n")
            tokens = " \n ".join(lines + [draw(st.sampled_from(lines))]).split(" ")
        else:
            tokens.insert(at, draw(st.sampled_from(sum(like, []) + ["(", ")", ","])))
    return (head + 'equations = """' + " ".join(tokens) + '"""' + tail).encode()


@FUZZ
@given(mutated_spec())
def test_mutated_shipped_specs(raw):
    front_end(raw)


@FUZZ
@given(mutated_equations())
def test_mutated_equations(raw):
    front_end(raw)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=80).map(b"".join))
def test_token_soup(raw):
    front_end(b'name = "f"\ninputs = ["x"]\nstates = ["h"]\nparameters = ["W", "U", "b"]\n'
              b'equations = """\n' + raw + b'\n"""\n')


@FUZZ
@given(st.one_of(st.binary(max_size=2000), st.text(max_size=2000).map(str.encode)))
def test_random_bytes_and_text(raw):
    front_end(raw)
