"""Memory and sequence-length scaling of one cellc training step (float32).

    python benchmarks/scaling.py [--cell lstm] [--batch 16] [--hidden 128]

memory:  peak memory allocated during forward + backward (tracemalloc, which numpy
         reports to), against the arrays forward saves for backward. The rest is
         workspace (adjoint buffers, GEMM outputs) plus the gradients themselves.
scaling: time per time step for T = 50 ... 2000. Linear in T means a flat column.
"""
import argparse
import importlib
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def problem(module, B, H, T):
    rng = np.random.default_rng(0)
    params = module.init_params(dtype=np.float32, I=H, H=H)
    x = rng.normal(size=(T, B, H)).astype(np.float32)
    dy = rng.normal(size=(T, B, H)).astype(np.float32)
    return params, x, dy


def memory(module, B, H, T):
    params, x, dy = problem(module, B, H, T)
    y, _, cache = module.forward(params, x)           # compile outside the trace
    module.backward(cache, dy)
    del y, cache
    module.clear_workspace()            # else the call reuses the warm-up's arrays
    tracemalloc.start()
    y, _, cache = module.forward(params, x)
    saved = sum(a.nbytes for a in cache["saved"].values())
    grads = module.backward(cache, dy)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    grad_bytes = sum(a.nbytes for g in grads for a in g.values())
    return peak, saved, grad_bytes


def per_step_ms(module, B, H, T, repeats=5):
    params, x, dy = problem(module, B, H, T)

    def step():
        y, _, cache = module.forward(params, x)
        module.backward(cache, dy)
    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3 / T


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cell", default="lstm")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=128)
    args = ap.parse_args()
    module = importlib.import_module(f"generated.{args.cell}")
    B, H = args.batch, args.hidden
    mb = 1 / 2**20
    print(f"{args.cell}, B={B}, I=H={H}, float32")
    print(f"{'T':>6s} {'peak MB':>9s} {'saved MB':>9s} {'grads MB':>9s} {'workspace MB':>13s} {'ms/step':>8s}")
    for T in (50, 100, 200, 500, 1000, 2000):
        peak, saved, grads = memory(module, B, H, T)
        ms = per_step_ms(module, B, H, T)
        print(f"{T:6d} {peak * mb:9.2f} {saved * mb:9.2f} {grads * mb:9.2f} "
              f"{(peak - saved - grads) * mb:13.2f} {ms:8.3f}")


if __name__ == "__main__":
    main()
