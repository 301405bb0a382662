"""Compile a cell spec, run forward and backward through time, and check the gradient.

    python examples/quickstart.py [specs/peephole_lstm.toml]
"""
import sys
import time
from pathlib import Path

import numpy as np

import cellc
from cellc.reference import interpreter
from cellc.passes import split
from cellc.frontend.spec import read_spec

spec = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent.parent / "specs" / "peephole_lstm.toml")
t0 = time.perf_counter()
cell = cellc.load(spec)                       # compiled once, then cached by content hash
print(f"loaded {cell.NAME} from {spec} in {time.perf_counter() - t0:.2f} s")
print(f"  inputs {cell.INPUTS}, states {cell.STATES}, output {cell.OUTPUT}")
print("  parameters: " + ", ".join(f"{k}{list(v)}" for k, v in cell.PARAMS.items()))

T, B, I, H = 20, 4, 8, 16
rng = np.random.default_rng(0)
params = cell.init_params(dtype=np.float64, seed=0, I=I, H=H)
x = rng.normal(size=(T, B, I))
states = {s: rng.normal(scale=0.1, size=(B, H)) for s in cell.STATES}

t0 = time.perf_counter()
y, final, cache = cell.forward(params, x, states)
dy = rng.normal(size=y.shape)                 # upstream gradient: loss = sum(y * dy)
grads = cell.backward(cache, dy)
print(f"forward + backward (T={T}, B={B}, I={I}, H={H}, first call compiles): "
      f"{time.perf_counter() - t0:.2f} s")

# Gradient check: the derivative of the loss along a random direction of every
# parameter, computed by central finite differences, against the kernels' gradients.
direction = {k: rng.normal(size=v.shape) for k, v in params.items()}


def loss(eps):
    moved = {k: v + eps * direction[k] for k, v in params.items()}
    return np.sum(cell.forward(moved, x, states)[0] * dy)


numeric = (loss(1e-6) - loss(-1e-6)) / 2e-6
analytic = sum(np.sum(grads.params[k] * direction[k]) for k in params)
print(f"gradient check: finite differences {numeric:.10f}, backward {analytic:.10f}, "
      f"relative error {abs(numeric - analytic) / abs(numeric):.1e}")

# The same cell through the reference NumPy interpreter.
ir = split(read_spec(spec))
y_ref, _, tape = interpreter.forward(ir, params, {"x": x}, states)
dparams, _, _ = interpreter.backward(ir, tape, dy)
err = max(np.max(np.abs(grads.params[k] - dparams[k])) / np.max(np.abs(dparams[k])) for k in params)
print(f"kernels vs interpreter: outputs {np.max(np.abs(y - y_ref)):.1e}, "
      f"worst parameter gradient (relative) {err:.1e}")
