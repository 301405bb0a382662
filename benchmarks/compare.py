"""Two checkouts of cellc, back to back: is a change within the noise, or faster?

    git worktree add ../before <commit>            # the checkout to compare against
    python benchmarks/compare.py ../before         # this checkout against it

Each round runs, for every cell and size, `benchmarks/bench.py --worker` of both
checkouts in turn (a fresh process each: the bound, then cellc), so that the machine's
drift falls on both alike. Prints per cell and size the medians of cellc's training step
and forward in each checkout, their ratio, the spread (min-max) and each checkout's
cellc ÷ its own bound, with the CPU, the BLAS kernels and the load average.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def worker(tree: Path, cell: str, size: str, impl: str, repeats: int) -> dict:
    out = subprocess.run([sys.executable, str(tree / "benchmarks" / "bench.py"), "--worker",
                          cell, size, impl, str(repeats)], capture_output=True, text=True,
                         cwd=tree, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def cpu() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", type=Path, help="the other checkout")
    ap.add_argument("--cells", nargs="+", default=["lstm", "gru", "gru_cho"])
    ap.add_argument("--sizes", nargs="+", default=["small", "medium"])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    trees = {"before": args.before.resolve(), "after": HERE}
    samples: dict = {}
    blas = None
    for _ in range(args.rounds):
        for cell in args.cells:
            for size in args.sizes:
                for name, tree in trees.items():
                    for impl in ("bound", "cellc"):
                        r = worker(tree, cell, size, impl, args.repeats)
                        blas = r["blas"]
                        for kind in ("train_ms", "forward_ms"):
                            samples.setdefault((cell, size, name, impl, kind), []).extend(r[kind])
    print(f"# {cpu()}, {os.cpu_count()} cores, OpenBLAS {blas} kernels, load after the run "
          f"{os.getloadavg()[0]:.2f}; {args.rounds} rounds x {args.repeats} runs, medians (min-max)")
    print(f"{'cell':8s} {'size':7s} {'':9s} {'before ms':>22s} {'after ms':>22s} {'after/before':>12s}"
          f" {'before/bound':>12s} {'after/bound':>11s}")
    for cell in args.cells:
        for size in args.sizes:
            for kind, label in (("train_ms", "training"), ("forward_ms", "forward")):
                med = {}
                text = []
                for name in trees:
                    v = samples[(cell, size, name, "cellc", kind)]
                    med[name] = statistics.median(v)
                    med[name, "bound"] = statistics.median(samples[(cell, size, name, "bound", kind)])
                    text.append(f"{med[name]:8.2f} ({min(v):.2f}-{max(v):.2f})")
                print(f"{cell:8s} {size:7s} {label:9s} {text[0]:>22s} {text[1]:>22s} "
                      f"{med['after'] / med['before']:12.3f} "
                      f"{med['before'] / med['before', 'bound']:12.2f} "
                      f"{med['after'] / med['after', 'bound']:11.2f}")


if __name__ == "__main__":
    main()
