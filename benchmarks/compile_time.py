"""Cold compile and warm start of one spec, against JAX's jit compile of the same training
step, each in fresh processes taking turns; prints (min, median, max) and the ratios.

    python benchmarks/compile_time.py [specs/lstm.toml] [--runs 5]

cold:  empty cellc and Numba caches: import cellc, cellc.load (SymPy stages, printing,
       writing and importing the module, numba with it), then the first forward and
       backward call, float32 (Numba's compilation). The SymPy stages and printing are
       also timed apart (compile_bytes, not counted twice).
warm:  a new process with both caches filled: the same steps (import cellc, cellc.load:
       numpy, numba, the generated module, then the first forward and backward call,
       which loads the cached machine code).
numba start: the first compile of a trivial function in a fresh process: the one-time
       start of Numba's compiler (its registries, LLVM's target), which the cold compile
       and the warm start both pay once per process.
jax:   jax.jit of lax.scan over the same cell's IR with its gradients (jax.vjp), as in
       benchmarks/bench.py: the first call (trace, lower, compile, run) minus a later
       call. `import jax` is not counted (shown apart).
Every process solves the same problem (float32, B=16, I=H=64, T=50).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import machine  # noqa: E402

B, H, T = 16, 64, 50

CELLC = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import cellc
out = {"import": time.perf_counter() - t0}
spec, mode, B, H, T = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
if mode == "cold":
    from cellc.driver import compile_bytes
    t0 = time.perf_counter()
    compiled = compile_bytes(open(spec, "rb").read(), spec)
    out["sympy_and_print"] = time.perf_counter() - t0
    out.update(compiled.timings)
t0 = time.perf_counter()
m = cellc.load(spec)
out["load"] = time.perf_counter() - t0
sizes = {d: H for d in m.DIMS}
p = m.init_params(dtype=np.float32, **sizes)
rng = np.random.default_rng(0)
x = {k: rng.normal(size=(T, B, sizes[d])).astype(np.float32) for k, d in m.INPUTS.items()}
t0 = time.perf_counter()
y, _, cache = m.forward(p, x)
m.backward(cache, np.ones_like(y))
out["first_call"] = time.perf_counter() - t0
print(json.dumps(out))
"""

NUMBA_START = r"""
import json, time
import numba, numpy as np
@numba.njit
def f(a):
    return a.sum()
t0 = time.perf_counter()
f(np.ones(3))
print(json.dumps({"numba_start": time.perf_counter() - t0}))
"""

JAX = r"""
import json, sys, time
sys.path[:0] = sys.argv[1:3]
spec, B, H, T = sys.argv[3], *map(int, sys.argv[4:7])
t0 = time.perf_counter()
import jax
out = {"import_jax": time.perf_counter() - t0}
import bench
from cellc import load
from cellc.frontend.spec import read_spec
from cellc.passes import split
m = load(spec)
train, _, _ = bench.make_jax(m.NAME, m, split(read_spec(spec)))(*bench.problem(m, B, H, T))
t0 = time.perf_counter()
train()
first = time.perf_counter() - t0
t0 = time.perf_counter()
train()
out["jax_compile"] = first - (time.perf_counter() - t0)
print(json.dumps(out))
"""


def child(code: str, args: list, env: dict) -> dict:
    res = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, check=True,
                         capture_output=True, text=True, cwd=ROOT, preexec_fn=machine.pin(1))
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", nargs="?", default="specs/lstm.toml")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-jax", action="store_true", help="cellc alone")
    args = ap.parse_args()
    spec = str(Path(args.spec).resolve())
    load_before, t0, c0 = os.getloadavg()[0], time.perf_counter(), os.times()
    print(f"# {time.strftime('%Y-%m-%d')}: {machine.describe(1)}")
    rows = {}
    env1 = machine.thread_env(1)
    for _ in range(args.runs):        # in turns, so that drift affects them alike
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(env1, CELLC_CACHE_DIR=tmp, NUMBA_CACHE_DIR=os.path.join(tmp, "nb"))
            for mode in ("cold", "warm"):
                r = child(CELLC, [spec, mode, B, H, T], env)
                total = r["import"] + r["load"] + r["first_call"]
                rows.setdefault(f"cellc {mode}", []).append(total)
                for k, v in r.items():
                    rows.setdefault(f"  {mode}: {k}", []).append(v)
        rows.setdefault("numba start", []).append(child(NUMBA_START, [], env1)["numba_start"])
        if not args.no_jax:
            r = child(JAX, [ROOT, ROOT / "benchmarks", spec, B, H, T], env1)
            rows.setdefault("jax compile", []).append(r["jax_compile"])
            rows.setdefault("  import jax (not counted)", []).append(r["import_jax"])
    stats = {k: machine.spread(v) for k, v in rows.items()}
    print(f"{args.spec}, float32 forward + backward, B={B}, I=H={H}, T={T}; "
          f"{args.runs} fresh processes each, in turns; seconds: median [min, max]")
    for k, s in stats.items():
        print(f"  {k:36s} {s['median']:7.3f} [{s['min']:.3f}, {s['max']:.3f}]")
    if "jax compile" in stats:
        jax = stats["jax compile"]["median"]
        for k in ("cellc cold", "cellc warm"):
            print(f"  {k} / jax compile: {stats[k]['median'] / jax:.2f}")
    children = os.times()
    cpu = children.children_user + children.children_system - c0.children_user - c0.children_system
    warning = machine.busy_warning(load_before, cpu, time.perf_counter() - t0, 1)
    if warning:
        print(warning)


if __name__ == "__main__":
    main()
