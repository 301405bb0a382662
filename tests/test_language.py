"""Constructs of the language that say what papers write (issue 15), each checked the
same way: the front end gives the IR one would write by hand, and the module compiled
from its bytes matches the interpreter in float64 and float32."""
import numpy as np
import pytest
from cellcheck import build, compare

from cellc.driver import compile_bytes

HEADER = ('name = "c"\ninputs = ["x"]\nstates = ["h"]\nparameters = ["W", "U", "b"]\n'
          'equations = """\n')


def spec(equations: str) -> str:
    return HEADER + equations + '\n"""\n'


NAMED = "dt = 0.076\nk = 2 * dt\nh' = h + k * tanh(x @ W + h @ U + b)"
INLINED = "h' = h + 0.152 * tanh(x @ W + h @ U + b)"


def test_named_constants_fold_to_the_cell_written_with_numbers():
    named = compile_bytes(spec(NAMED).encode()).cell
    inlined = compile_bytes(spec(INLINED).encode()).cell
    assert [(n.name, n.expr) for n in named.nodes] == [(n.name, n.expr) for n in inlined.nodes]
    assert "k * tanh" in [n.text for n in named.nodes][0]      # comments read like the paper


@pytest.mark.parametrize("dtype, bound", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_named_constants_in_kernels_match_the_interpreter(dtype, bound):
    module, cell = build(spec(NAMED))
    errors = compare(module, cell, T=5, B=3, sizes={"I": 2, "H": 4}, dtype=dtype, seed=1)
    assert max(errors.values()) < bound, errors
