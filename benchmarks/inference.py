"""The forward that saves nothing (`forward(..., need_grad=False)`) against the training
forward: peak memory and time, each in fresh processes, float32.

    python benchmarks/inference.py                       # LSTM, B=64, I=H=256, T=100 and 4000
    python benchmarks/inference.py --cell gru --T 100 1000 --rounds 5

Peak memory is what numpy allocates during one call, beyond the inputs and parameters
(tracemalloc, which numpy reports its arrays to), with the module's workspace cleared
first; time is the median of `--repeats` calls after a warm-up, in `--rounds` fresh
processes taking turns. Prints a table and the machine it ran on.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time, tracemalloc
import numpy as np
sys.path.insert(0, sys.argv[1])
import importlib
cell, T, B, H, need_grad, repeats = sys.argv[2], *map(int, sys.argv[3:6]), sys.argv[6] == "1", int(sys.argv[7])
m = importlib.import_module(f"generated.{cell}")
sizes = {d: H for d in m.DIMS}
params = m.init_params(dtype=np.float32, seed=0, **sizes)
rng = np.random.default_rng(0)
x = rng.normal(size=(T, B, sizes[next(iter(m.INPUTS.values()))])).astype(np.float32)
run = lambda: m.forward(params, x, need_grad=need_grad)
run()                                          # compile, warm up
m.clear_workspace()
tracemalloc.start()
out = run()
peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
del out
times = []
for _ in range(repeats):
    t0 = time.perf_counter(); out = run(); times.append(time.perf_counter() - t0); del out
print(json.dumps({"peak_mb": peak / 1e6, "ms": [t * 1e3 for t in times]}))
"""


def run(cell, T, B, H, need_grad, repeats) -> dict:
    cmd = [sys.executable, "-c", CHILD, str(ROOT), cell, str(T), str(B), str(H),
           "1" if need_grad else "0", str(repeats)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cell", default="lstm")
    ap.add_argument("--T", type=int, nargs="+", default=[100, 4000])
    ap.add_argument("--B", type=int, default=64)
    ap.add_argument("--H", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    print(f"{args.cell}, B={args.B}, I=H={args.H}, float32; medians of {args.rounds} processes "
          f"x {args.repeats} calls (min-max)")
    print(f"{'T':>6}  {'forward':>28}  {'need_grad=False':>28}  {'memory':>7}  {'time':>6}")
    for T in args.T:
        repeats = max(1, args.repeats if T <= 1000 else 2)
        samples = {True: [], False: []}
        peaks = {True: [], False: []}
        for _ in range(args.rounds):
            for need_grad in (True, False):
                r = run(args.cell, T, args.B, args.H, need_grad, repeats)
                samples[need_grad] += r["ms"]
                peaks[need_grad].append(r["peak_mb"])
        med = {k: statistics.median(v) for k, v in samples.items()}
        peak = {k: max(v) for k, v in peaks.items()}
        cols = [f"{peak[k]:8.1f} MB {med[k]:8.1f} ms ({min(samples[k]):.0f}-{max(samples[k]):.0f})"
                for k in (True, False)]
        print(f"{T:>6}  {cols[0]:>28}  {cols[1]:>28}  {peak[False] / peak[True]:6.2f}x "
              f"{med[False] / med[True]:5.2f}x")


if __name__ == "__main__":
    main()
