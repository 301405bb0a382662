"""Cold compile and warm start of one spec, each in fresh processes; prints medians.

    python benchmarks/compile_time.py [specs/lstm.toml] [--runs 5]

cold: empty cellc and Numba caches; times SymPy stages, printing, and Numba's
      compilation (first forward + backward call, float32), separately.
warm: a new process with both caches filled; times import + first forward/backward call.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import cellc
t_import = time.perf_counter() - t0
spec, mode = sys.argv[1], sys.argv[2]
out = {"import_cellc": t_import}
if mode == "cold":
    from cellc.driver import compile_bytes
    raw = open(spec, "rb").read()
    compiled = compile_bytes(raw, spec)
    out.update(compiled.timings)
t0 = time.perf_counter()
m = cellc.load(spec)
out["load"] = time.perf_counter() - t0
sizes = {d: 8 for d in m.DIMS}
p = m.init_params(dtype=np.float32, **sizes)
x = np.ones((3, 2, sizes[m.INPUTS[next(iter(m.INPUTS))]]), np.float32)
t0 = time.perf_counter()
y, _, cache = m.forward(p, x if len(m.INPUTS) == 1 else {k: x for k in m.INPUTS})
m.backward(cache, np.ones_like(y))
out["first_call"] = time.perf_counter() - t0
print(json.dumps(out))
"""


def run(spec, mode, env):
    t0 = __import__("time").perf_counter()
    res = subprocess.run([sys.executable, "-c", CHILD, spec, mode], env=env, check=True,
                         capture_output=True, text=True)
    data = json.loads(res.stdout)
    data["process"] = __import__("time").perf_counter() - t0
    return data


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", nargs="?", default="specs/lstm.toml")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    cold, warm = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, CELLC_CACHE_DIR=tmp, NUMBA_CACHE_DIR=os.path.join(tmp, "nb"))
            cold.append(run(args.spec, "cold", env))
            warm.append(run(args.spec, "warm", env))
    med = lambda rows, k: statistics.median(r[k] for r in rows)
    sympy_stages = ["frontend", "regularize", "split", "schedule", "derive", "lower"]
    print(f"{args.spec}: medians of {args.runs} fresh processes")
    print(f"  cold  SymPy stages {sum(med(cold, k) for k in sympy_stages):.3f} s "
          f"({', '.join(f'{k} {med(cold, k):.3f}' for k in sympy_stages)})")
    print(f"        print {med(cold, 'print'):.3f} s; Numba (first forward+backward) "
          f"{med(cold, 'first_call'):.3f} s; import cellc {med(cold, 'import_cellc'):.3f} s")
    print(f"  warm  import cellc {med(warm, 'import_cellc'):.3f} s + load {med(warm, 'load'):.3f} s"
          f" + first call {med(warm, 'first_call'):.3f} s = "
          f"{med(warm, 'import_cellc') + med(warm, 'load') + med(warm, 'first_call'):.3f} s")


if __name__ == "__main__":
    main()
