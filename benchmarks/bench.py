"""Side-by-side benchmark: one training step (forward over the sequence + backward
through time, gradients for every parameter, the input and the initial states) and
one forward pass, float32.

    python benchmarks/bench.py                          # all cells, all sizes
    python benchmarks/bench.py --cells lstm gru --sizes medium --repeats 5 --threads 1

Implementations, each in its own fresh process, each first checked against the float64
NumPy interpreter on the very problem it is timed on (relative gradient error):
  bound          the lower bound: only the GEMMs any implementation must do (the cell's
                 own fused GEMMs from cellc's plan), as a compiled loop making cellc's
                 own BLAS calls (benchmarks/bound.py)
  cellc          the generated kernels
  torch.nn       torch.nn.LSTM / GRU / RNN, where the cell has one
  torch loop     the cell written as a user would in PyTorch (benchmarks/torch_cells.py)
  torch script   the same, under torch.jit.script
  jax scan       jax.jit of lax.scan over the cell's IR, gradients with jax.vjp
Every library gets the same number of threads (--threads, default: every core). On a CPU
with AVX-512, `bound` and `cellc` also run with OPENBLAS_CORETYPE=SkylakeX (AVX-512
kernels forced), rows `bound/SkylakeX` and `cellc/SkylakeX`; elsewhere those rows are not
offered (they would die with SIGILL). The forward pass saves nothing for backward in every
implementation: torch under no_grad, JAX without a vjp, cellc with need_grad=False.

Implementations take turns (--rounds passes, a fresh process each), and each reports the
median, min and max of all its runs and its CPU time beside the wall time: drift on a
shared machine then affects all of them alike, and a busy machine is reported. The output
names the CPU, its vector extensions and the BLAS kernel. Writes
benchmarks/results/bench.json and bench.png.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import machine  # noqa: E402  (benchmarks/machine.py)

SIZES = {"small": (16, 64, 50), "medium": (64, 256, 100), "large": (128, 512, 100)}  # B, I=H, T
CELLS = ["lstm", "gru", "elman", "peephole_lstm", "gru_cho", "elman_relu", "gru_seed",
         "cifg_lstm", "mgu", "indrnn", "mingru", "lstmp", "ln_lstm"]
IMPLS = ["bound", "cellc", "torch.nn", "torch loop", "torch script", "jax scan"]
AVX512 = "SkylakeX"
THREADS = int(os.environ.get("CELLC_BENCH_THREADS", os.cpu_count() or 1))   # set by the driver


# ---- one implementation, in a worker process --------------------------------------
def bench_sizes(dims, H) -> dict[str, int]:
    """I = H = the size's H; any other dimension (an LSTMP's projection P) H / 2."""
    return {d: H if d in ("I", "H") else max(H // 2, 1) for d in dims}


def problem(module, B, H, T, seed=0):
    rng = np.random.default_rng(seed)
    sizes = bench_sizes(module.DIMS, H)
    params = module.init_params(dtype=np.float32, seed=seed, **sizes)
    x = rng.normal(size=(T, B, H)).astype(np.float32)
    states = {s: rng.normal(scale=0.1, size=(B, sizes[d])).astype(np.float32)
              for s, d in module.STATES.items()}
    dy = rng.normal(size=(T, B, sizes[module.OUTPUT_DIM])).astype(np.float32)
    return params, x, states, dy


def make_cellc(name, module, ir):
    def build(params, x, states, dy):
        def train():
            y, _, cache = module.forward(params, x, states)
            return module.backward(cache, dy)

        def grads():
            g = train()
            return {**g.params, **g.inputs, **{f"{k}0": v for k, v in g.states.items()}}
        return train, lambda: module.forward(params, x, states, need_grad=False), grads
    return build


def torch_steps(run, leaves, dy):
    """(train, forward) for a torch function `run` of the leaves: a training step with the
    loss sum(run() * dy), and a forward pass under no_grad."""
    import torch

    def train():
        for leaf in leaves:
            leaf.grad = None
        (run() * dy).sum().backward()

    def forward():
        with torch.no_grad():
            run()
    return train, forward


def make_torch(name, module, ir, mode):
    import torch
    import torch_cells
    torch.set_num_threads(THREADS)

    def build(params, x, states, dy):
        H = x.shape[-1]
        xt = torch.tensor(x, requires_grad=True)
        st = [torch.tensor(states[s], requires_grad=True) for s in module.STATES]
        dyt = torch.tensor(dy)
        if mode == "nn":
            layer = torch_cells.nn_layer(module, {k: torch.tensor(v) for k, v in params.items()},
                                         H, H)
            hs = [s[None] for s in st]

            def run():
                return layer(xt, tuple(hs) if len(hs) > 1 else hs[0])[0]
            leaves = list(layer.parameters())
        else:
            fn = torch_cells.CELLS[name]
            fn = torch.jit.script(fn) if mode == "script" else fn
            pt = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}

            def run():
                return fn(xt, st, pt)[0]
            leaves = list(pt.values())

        train, forward = torch_steps(run, leaves + [xt] + st, dyt)

        def grads():
            train()
            out = (torch_cells.nn_grads(module, layer) if mode == "nn"
                   else {k: v.grad for k, v in pt.items()})
            out["x"] = xt.grad
            out.update({f"{s}0": t.grad for s, t in zip(module.STATES, st)})
            return {k: v.detach().numpy() for k, v in out.items()}
        return train, forward, grads
    return build


def make_jax(name, module, ir):
    import jax
    import jax.numpy as jnp
    from jax import lax

    from cellc import naming
    from cellc.ir.functions import FUNCTIONS
    from cellc.reference.interpreter import evaluate
    fns = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu, "exp": jnp.exp,
           "log": jnp.log, "softplus": jax.nn.softplus, "abs": jnp.abs, "sign": jnp.sign,
           "sqrt": jnp.sqrt, "max": jnp.maximum, "min": jnp.minimum,
           "step": lambda v: (v > 0).astype(v.dtype),
           "gt": lambda a, b: (a > b).astype(jnp.result_type(a, b)),
           "ge": lambda a, b: (a >= b).astype(jnp.result_type(a, b)),
           "where": lambda c, a, b: jnp.where(c != 0, a, b), "floor": jnp.floor,
           "mod": lambda a, b: a - b * jnp.floor(a / b), "sin": jnp.sin, "cos": jnp.cos,
           "logsigmoid": jax.nn.log_sigmoid, "silu": jax.nn.silu}
    assert set(fns) == set(FUNCTIONS)

    sizes = {}                                       # len__D, bound in build()

    def step(p, carry, xt):
        env = dict(sizes)
        env.update(p)
        env.update(carry)
        env["x"] = xt
        for n in ir.nodes:
            env[n.name] = (env[n.operand] @ p[n.weight] if n.is_matmul
                           else evaluate(n.expr, env, fns))
        return {s: env[naming.new(s)] for s in carry}, env[ir.output]

    def run(p, x, s0):
        final, ys = lax.scan(lambda c, xt: step(p, c, xt), s0, x)
        return ys

    def build(params, x, states, dy):
        from cellc.ir.cell import size_symbol
        sizes.update({size_symbol(d).name: float(n) for d, n in
                      bench_sizes(ir.dims, x.shape[-1]).items()})
        p = {k: jnp.asarray(v) for k, v in params.items()}
        xs, s0, dyj = jnp.asarray(x), {k: jnp.asarray(v) for k, v in states.items()}, jnp.asarray(dy)
        train_fn = jax.jit(lambda p, x, s0, dy: jax.vjp(run, p, x, s0)[1](dy))
        fwd_fn = jax.jit(run)

        def grads():
            gp, gx, gs = train_fn(p, xs, s0, dyj)
            out = {k: np.asarray(v) for k, v in gp.items()}
            out["x"] = np.asarray(gx)
            out.update({f"{k}0": np.asarray(v) for k, v in gs.items()})
            return out
        return (lambda: jax.block_until_ready(train_fn(p, xs, s0, dyj)),
                lambda: jax.block_until_ready(fwd_fn(p, xs, s0)), grads)
    return build


def make_bound(name, module, ir):
    import bound

    from cellc.passes import schedule
    plan = schedule(ir)

    def build(params, x, states, dy):
        T, B, H = x.shape
        b = bound.make_bound(module, plan, bench_sizes(plan.cell.dims, H), B, T)
        return b.train, b.forward, None
    return build


def train_flops(name, ir, B, H, T):
    import bound

    from cellc.passes import schedule
    plan = schedule(ir)
    return bound.train_flops(plan, bench_sizes(plan.cell.dims, H), B, T)


def timed(train, forward, repeats: int) -> dict:
    """Wall and CPU milliseconds of `repeats` runs of each, after two warm-up runs."""
    result = {}
    for label, fn in (("train", train), ("forward", forward)):
        fn()
        fn()
        wall, cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
        result[f"{label}_ms"], result[f"{label}_cpu_ms"] = wall, cpu
    return result


def relative_error(got: dict, want: dict) -> float:
    return max(float(np.max(np.abs(got[k] - want[k])) / max(np.max(np.abs(want[k])), 1e-30))
               for k in want)


# float32 against the float64 interpreter over a whole timed sequence (up to T=100 steps)
TOLERANCE = 1e-3


def worker(cell: str, size: str, impl: str, repeats: int) -> dict:
    import importlib

    from cellc.frontend.spec import read_spec
    from cellc.passes import split
    from cellc.reference import interpreter
    module = importlib.import_module(f"generated.{cell}")
    ir = split(read_spec(ROOT / "specs" / f"{cell}.toml"))
    base = impl.split("/")[0]
    make = {"bound": make_bound, "cellc": make_cellc, "jax scan": make_jax,
            "torch.nn": lambda *a: make_torch(*a, "nn"),
            "torch loop": lambda *a: make_torch(*a, "eager"),
            "torch script": lambda *a: make_torch(*a, "script")}[base]
    build = make(cell, module, ir)
    result = {"cell": cell, "size": size, "impl": impl, "blas": machine.blas_kernel().split()[-1]}

    # Gradients of the timed problem itself, against the float64 interpreter.
    B, H, T = SIZES[size]
    params, x, states, dy = problem(module, B, H, T)
    train, forward, grads = build(params, x, states, dy)
    if grads is not None:
        got = grads()
        p64 = {k: v.astype(np.float64) for k, v in params.items()}
        s64 = {k: v.astype(np.float64) for k, v in states.items()}
        _, _, tape = interpreter.forward(ir, p64, {"x": x.astype(np.float64)}, s64)
        dp, dx, d0 = interpreter.backward(ir, tape, dy.astype(np.float64))
        result["check"] = relative_error(got, {**dp, **dx, **{f"{k}0": v for k, v in d0.items()}})
        if not result["check"] < TOLERANCE:
            result["error"] = f"gradient check failed: relative error {result['check']:.2e}"
            return result
    result.update(timed(train, forward, repeats))
    result["flops"] = train_flops(cell, ir, B, H, T)
    return result


# ---- a stacked, bidirectional, ragged layer against torch.nn on a packed batch ----------
STACKS = {"lstm-2L-bi-packed": ("lstm", 2)}      # name -> (cell, layers), bidirectional


def stack_problem(B, H, T, seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    lengths = np.sort(rng.integers(T // 2, T + 1, size=B))[::-1].copy()
    lengths[0] = T
    x = rng.normal(size=(T, B, H)).astype(dtype)
    dy = rng.normal(size=(T, B, 2 * H)).astype(dtype)
    for b, n in enumerate(lengths):
        dy[n:, b] = 0
    return x, lengths, dy


def stack_worker(name: str, size: str, impl: str, repeats: int) -> dict:
    """cellc's Layer (through cellc.torch.RNN) and torch.nn.LSTM on the same packed batch of
    sequences of lengths T/2..T, 2 layers, bidirectional. Checked against float64 torch.nn."""
    import importlib

    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    import cellc.torch as ct
    # The BLAS does the work: torch.nn's (MKL, torch's threads) or cellc's (numpy's OpenBLAS,
    # cellc.torch's threads, one by default). Under cellc torch only packs, and its idle
    # OpenMP threads would spin beside cellc's BLAS threads: measured here (small), 16-112 ms
    # a step with both at 2 threads against 9.7-9.8 ms with torch at 1.
    torch.set_num_threads(1 if impl.startswith("cellc") else THREADS)
    ct.set_blas_threads(THREADS)
    cell, layers = STACKS[name]
    module = importlib.import_module(f"generated.{cell}")
    result = {"cell": name, "size": size, "impl": impl, "blas": machine.blas_kernel().split()[-1]}

    def build(B, H, T, seed, dtype, use_torch):
        torch.manual_seed(seed)
        ref = getattr(torch.nn, module.TORCH["module"])(H, H, layers, bidirectional=True).to(dtype)
        layer = ref if use_torch else ct.RNN.from_torch(ref, module)
        x, lengths, dy = stack_problem(B, H, T, seed, np.float64 if dtype == torch.float64 else np.float32)
        xt = torch.tensor(x, requires_grad=True)
        dyt, lt = torch.tensor(dy), torch.tensor(lengths)

        def run():
            y, _ = layer(pack_padded_sequence(xt, lt))
            return pad_packed_sequence(y, total_length=T)[0]

        train, forward = torch_steps(run, [xt, *layer.parameters()], dyt)

        def grads():
            train()
            g = (ct.grads_from_torch(module, ref) if use_torch
                 else {k: v.grad.numpy() for k, v in layer.named_parameters()})
            return {**g, "x": xt.grad.numpy()}
        return train, forward, grads

    use_torch = impl.startswith("torch")
    B, H, T = SIZES[size]
    train, forward, grads = build(B, H, T, 0, torch.float32, use_torch)
    result["check"] = relative_error(grads(), build(B, H, T, 0, torch.float64, True)[2]())
    if not result["check"] < TOLERANCE:
        result["error"] = f"gradient check failed: relative error {result['check']:.2e}"
        return result
    result.update(timed(train, forward, repeats))
    steps = int(stack_problem(B, H, T, 0)[1].sum())          # rows that do work, all steps
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[module.TORCH["module"]]
    result["flops"] = sum(2 * 6 * steps * (H * (1 if k == 0 else 2) + H) * G * H
                          for k in range(layers))
    return result


# ---- the driver --------------------------------------------------------------------
def available(cell: str, impl: str) -> bool:
    base = impl.split("/")[0]
    if cell in STACKS:
        return base in ("cellc", "torch.nn")
    if base == "torch.nn":          # the spec maps a torch.nn layer ([torch] table)
        import importlib
        return importlib.import_module(f"generated.{cell}").TORCH is not None
    return True


def run_one(cell, size, impl, repeats, threads) -> dict:
    env = machine.thread_env(threads)
    env["CELLC_BENCH_THREADS"] = str(threads)
    if impl.endswith("/" + AVX512):
        env["OPENBLAS_CORETYPE"] = AVX512
    cmd = [sys.executable, __file__, "--worker", cell, size, impl, str(repeats)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          preexec_fn=machine.pin(threads))
    if proc.returncode != 0:
        return {"cell": cell, "size": size, "impl": impl,
                "error": (proc.stderr.strip().splitlines() or [f"failed ({proc.returncode})"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


SERIES = ("train_ms", "train_cpu_ms", "forward_ms", "forward_cpu_ms")


def run_rounds(cell, size, impls, rounds, repeats, threads) -> list[dict]:
    """Every implementation, `rounds` times in turn (a fresh process each time), so
    that the shared machine's drift affects them all alike; (min, median, max) over all
    samples."""
    samples: dict[str, dict] = {}
    for _ in range(rounds):
        for impl in impls:
            r = run_one(cell, size, impl, repeats, threads)
            if "error" in r:
                samples[impl] = r
            elif "error" not in samples.get(impl, {}):
                kept = samples.setdefault(impl, dict(r, **{k: [] for k in SERIES}))
                for k in SERIES:
                    kept[k] += r[k]
    results = []
    for impl, r in samples.items():
        if "error" not in r:
            r["samples"] = len(r["train_ms"])
            for k in SERIES:
                r[k.replace("_ms", "_spread")] = machine.spread(r[k])
                r[k] = statistics.median(r[k])
            r["gflops"] = r.pop("flops") / r["train_ms"] / 1e6
        results.append(r)
    return results


def ratio(a: dict, b: dict | None, key: str) -> str:
    return f"{a[key] / b[key]:.2f}" if b else "-"


def table(results: list[dict]) -> str:
    lines = []
    groups = {}
    for r in results:
        groups.setdefault((r["cell"], r["size"]), []).append(r)
    for (cell, size), rows in groups.items():
        B, H, T = SIZES[size]
        by = {r["impl"]: r for r in rows if "train_ms" in r}
        nn = by.get("torch.nn")
        lines.append(f"\n{cell}, {size} (B={B}, I=H={H}, T={T}); ms: median [min, max], CPU ms")
        lines.append(f"  {'implementation':26s} {'train ms':>24s} {'CPU':>8s} {'x bound':>8s} "
                     f"{'x nn':>6s} {'GFLOP/s':>8s} {'fwd ms':>8s} {'x bound':>8s} {'x nn':>6s}  check")
        for r in rows:
            name = r["impl"] + (f" [{r['blas']}]" if r["impl"].split("/")[0] in ("bound", "cellc") else "")
            if "train_ms" not in r:
                lines.append(f"  {name:26s} {r.get('error', 'failed')}")
                continue
            suffix = "/" + r["impl"].split("/")[1] if "/" in r["impl"] else ""
            bound = by.get("bound" + suffix)
            check = f"{r['check']:.0e}" if "check" in r else "-"
            spread = r["train_spread"]
            train = f"{r['train_ms']:.2f} [{spread['min']:.2f}, {spread['max']:.2f}]"
            lines.append(f"  {name:26s} {train:>24s} {r['train_cpu_ms']:8.2f} "
                         f"{ratio(r, bound, 'train_ms'):>8s} {ratio(r, nn, 'train_ms'):>6s} "
                         f"{r['gflops']:8.1f} {r['forward_ms']:8.2f} "
                         f"{ratio(r, bound, 'forward_ms'):>8s} {ratio(r, nn, 'forward_ms'):>6s}  {check}")
    return "\n".join(lines)


def chart(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    bounded = {(r["cell"], r["size"]) for r in results if r["impl"] == "bound"}
    groups = sorted(bounded,
                    key=lambda g: (CELLS.index(g[0]) if g[0] in CELLS else 99, list(SIZES).index(g[1])))
    impls = [i for i in dict.fromkeys(r["impl"] for r in results) if not i.startswith("bound")]
    fig, ax = plt.subplots(figsize=(max(8, 1.4 * len(groups)), 4.5))
    width = 0.8 / max(len(impls), 1)
    for k, impl in enumerate(impls):
        ys = []
        for cell, size in groups:
            r = next((r for r in results if (r["cell"], r["size"], r["impl"]) == (cell, size, impl)
                      and "train_ms" in r), None)
            same_blas = "bound" + ("/" + impl.split("/")[1] if "/" in impl else "")
            bound = next((b for b in results if (b["cell"], b["size"], b["impl"]) ==
                          (cell, size, same_blas) and "train_ms" in b), None)
            ys.append(r["train_ms"] / bound["train_ms"] if r and bound else 0)
        ax.bar([g + k * width for g in range(len(groups))], ys, width, label=impl)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    ax.set_xticklabels([f"{c}\n{s}" for c, s in groups])
    ax.set_ylabel("training step / GEMM lower bound, same BLAS")
    ax.set_yscale("log")
    ax.legend(fontsize=8, ncol=3)
    ax.set_title("One training step (forward + BPTT), float32: lower is better")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        cell, size, impl, repeats = sys.argv[2:6]
        run = stack_worker if cell in STACKS else worker
        print(json.dumps(run(cell, size, impl, int(repeats))))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", nargs="+", default=CELLS + list(STACKS))
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--impls", nargs="+", default=None,
                    help=f"default: {' '.join(IMPLS)}, and bound/{AVX512} cellc/{AVX512} "
                         "where the CPU has AVX-512")
    ap.add_argument("--rounds", type=int, default=3, help="passes over all implementations")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per pass")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="threads for every library (BLAS, torch, XLA); default: every core")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    avx512 = [f"bound/{AVX512}", f"cellc/{AVX512}"]
    impls = args.impls or IMPLS + (avx512 if machine.has_avx512() else [])
    if not machine.has_avx512() and any(i.endswith("/" + AVX512) for i in impls):
        ap.error(f"this CPU has no AVX-512: the /{AVX512} rows would die with SIGILL")
    load_before = os.getloadavg()[0]
    print(f"# {time.strftime('%Y-%m-%d')}: {machine.describe(args.threads)}", flush=True)
    t0, c0 = time.perf_counter(), _children_cpu()
    results = []
    for cell in args.cells:
        for size in args.sizes:
            for r in run_rounds(cell, size, [i for i in impls if available(cell, i)],
                                args.rounds, args.repeats, args.threads):
                results.append(r)
                status = f"{r['train_ms']:.2f} ms" if "train_ms" in r else r.get("error")
                print(f"  {cell:14s} {size:7s} {r['impl']:22s} {status}", file=sys.stderr, flush=True)
    print(table(results))
    warning = machine.busy_warning(load_before, _children_cpu() - c0, time.perf_counter() - t0,
                                   args.threads)
    if warning:
        print("\n" + warning)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": machine.describe(args.threads),
            "threads": args.threads, "sizes": SIZES, "busy": warning}
    (out / "bench.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    chart(results, out / "bench.png")
    print(f"\nwrote {out / 'bench.json'} and {out / 'bench.png'}")


def _children_cpu() -> float:
    """CPU seconds of the finished worker processes."""
    t = os.times()
    return t.children_user + t.children_system


if __name__ == "__main__":
    main()
