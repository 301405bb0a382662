"""Side-by-side benchmark: one training step (forward over the sequence + backward
through time, gradients for every parameter, the input and the initial states) and
one forward pass, float32, both cores.

    python benchmarks/bench.py                          # all cells, all sizes
    python benchmarks/bench.py --cells lstm gru --sizes medium --repeats 5

Implementations, each in its own fresh process, each first checked against the
float64 NumPy interpreter (relative gradient error on a small problem):
  bound          the lower bound: only the GEMMs any implementation must do (the cell's
                 own fused GEMMs from cellc's plan), numpy's OpenBLAS
  cellc          the generated kernels
  torch.nn       torch.nn.LSTM / GRU / RNN, where the cell has one
  torch loop     the cell written as a user would in PyTorch (benchmarks/torch_cells.py)
  torch script   the same, under torch.jit.script
  jax scan       jax.jit of lax.scan over the cell's IR, gradients with jax.vjp
`bound` and `cellc` run twice: under this environment's OPENBLAS_CORETYPE and with
OPENBLAS_CORETYPE=SkylakeX (AVX-512 kernels); the table says which is which.
Forward for torch and JAX runs under no_grad/without saving; cellc's forward always
saves what backward needs.

Implementations take turns (--rounds passes, a fresh process each), and each reports
the median of all its runs: drift on a shared machine then affects all of them alike.
Writes benchmarks/results/bench.json and bench.png.
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

SIZES = {"small": (16, 64, 50), "medium": (64, 256, 100), "large": (128, 512, 100)}  # B, I=H, T
CELLS = ["lstm", "gru", "elman", "peephole_lstm", "gru_cho", "elman_relu", "gru_seed",
         "cifg_lstm", "mgu", "indrnn", "mingru", "lstmp", "ln_lstm"]
IMPLS = ["bound", "cellc", "torch.nn", "torch loop", "torch script", "jax scan"]
AVX512 = "SkylakeX"


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
        return train, lambda: module.forward(params, x, states), grads
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
    torch.set_num_threads(2)

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
           "step": lambda v: (v > 0).astype(v.dtype)}
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


def gemm_plan(plan, H):
    """(kind, n_in, width) of every fused GEMM in cellc's plan, sizes as `bench_sizes`."""
    sizes, dim = bench_sizes(plan.cell.dims, H), plan.cell.dim_of()
    return [(kind, sizes[dim[g.operand]], sum(sizes[n.dim] for n in g.nodes))
            for kind, g in plan.gemms()]


def make_bound(name, module, ir):
    from cellc.passes import schedule
    plan = schedule(ir)

    def build(params, x, states, dy):
        T, B, H = x.shape                  # I = H
        rng = np.random.default_rng(0)
        gemms = []
        for kind, n_in, w in gemm_plan(plan, H):
            W = rng.normal(size=(n_in, w)).astype(np.float32)
            X = rng.normal(size=(T, B, n_in)).astype(np.float32)
            M = np.empty((T, B, w), np.float32)
            dM = rng.normal(size=(T, B, w)).astype(np.float32)
            gemms.append((kind, W, X, M, dM, np.empty((B, n_in), np.float32)))
        # backward products take W.T made contiguous once, as cellc does: OpenBLAS's
        # AVX-512 kernels are much slower on a transposed operand
        transposed = [np.ascontiguousarray(W.T) for _, W, *_ in gemms]

        def forward():
            for kind, W, X, M, dM, dX in gemms:
                if kind == "static":
                    np.matmul(X.reshape(T * B, -1), W, out=M.reshape(T * B, -1))
            for t in range(T):
                for kind, W, X, M, dM, dX in gemms:
                    if kind == "step":
                        np.matmul(X[t], W, out=M[t])

        def train():
            forward()
            for t in range(T - 1, -1, -1):
                for (kind, W, X, M, dM, dX), Wt in zip(gemms, transposed):
                    if kind == "step":
                        np.matmul(dM[t], Wt, out=dX)
            for (kind, W, X, M, dM, dX), Wt in zip(gemms, transposed):
                if kind == "static":                      # input gradient
                    dM.reshape(T * B, -1) @ Wt
                X.reshape(T * B, -1).T @ dM.reshape(T * B, -1)   # weight gradient
        return train, forward, None
    return build


def train_flops(name, ir, B, H, T):
    from cellc.passes import schedule
    # each GEMM runs three times: forward, its input/state gradient, its weight gradient
    return sum(3 * 2 * T * B * n_in * w for _, n_in, w in gemm_plan(schedule(ir), H))


def blas_core() -> str:
    import ctypes
    import glob
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__) + ".libs", "libscipy_openblas*"))
    for lib in libs:
        try:
            f = ctypes.CDLL(lib).scipy_openblas_get_corename64_
            f.restype = ctypes.c_char_p
            return f().decode()
        except (OSError, AttributeError):
            continue
    return "unknown"


def timed(train, forward, repeats: int) -> dict:
    """Milliseconds of `repeats` runs of each, after two warm-up runs."""
    result = {}
    for label, fn in (("train_ms", train), ("forward_ms", forward)):
        fn()
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        result[label] = times
    return result


def worker(cell: str, size: str, impl: str, repeats: int) -> dict:
    import importlib

    from cellc.reference import interpreter
    from cellc.passes import split
    from cellc.frontend.spec import read_spec
    module = importlib.import_module(f"generated.{cell}")
    ir = split(read_spec(ROOT / "specs" / f"{cell}.toml"))
    base = impl.split("/")[0]
    make = {"bound": make_bound, "cellc": make_cellc, "jax scan": make_jax,
            "torch.nn": lambda *a: make_torch(*a, "nn"),
            "torch loop": lambda *a: make_torch(*a, "eager"),
            "torch script": lambda *a: make_torch(*a, "script")}[base]
    build = make(cell, module, ir)
    result = {"cell": cell, "size": size, "impl": impl, "blas": blas_core()}

    # Gradient check against the float64 interpreter on a small problem.
    params, x, states, dy = problem(module, 3, 8, 5, seed=1)
    _, _, grads = build(params, x, states, dy)
    if grads is not None:
        got = grads()
        _, _, tape = interpreter.forward(ir, params, {"x": x}, states)
        dp, dx, d0 = interpreter.backward(ir, tape, dy.astype(np.float64))
        ref = {**dp, **dx, **{f"{k}0": v for k, v in d0.items()}}
        result["check"] = max(float(np.max(np.abs(got[k] - ref[k])) / np.max(np.abs(ref[k])))
                              for k in ref)
        if not result["check"] < 1e-4:
            result["error"] = f"gradient check failed: relative error {result['check']:.2e}"
            return result

    B, H, T = SIZES[size]
    train, forward, _ = build(*problem(module, B, H, T))
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
    # torch only packs here: cellc gives both cores to its BLAS (see cellc.torch._blas_threads)
    torch.set_num_threads(1 if impl.startswith("cellc") else 2)
    cell, layers = STACKS[name]
    module = importlib.import_module(f"generated.{cell}")
    result = {"cell": name, "size": size, "impl": impl, "blas": blas_core()}

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
    got = build(3, 8, 5, 1, torch.float32, use_torch)[2]()
    want = build(3, 8, 5, 1, torch.float64, True)[2]()
    result["check"] = max(float(np.max(np.abs(got[k] - want[k])) / np.max(np.abs(want[k])))
                          for k in want)
    B, H, T = SIZES[size]
    train, forward, _ = build(B, H, T, 0, torch.float32, use_torch)
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


def run_one(cell, size, impl, repeats) -> dict:
    env = dict(os.environ)
    if impl.endswith("/" + AVX512):
        env["OPENBLAS_CORETYPE"] = AVX512
    cmd = [sys.executable, __file__, "--worker", cell, size, impl, str(repeats)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"cell": cell, "size": size, "impl": impl,
                "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_rounds(cell, size, impls, rounds, repeats) -> list[dict]:
    """Every implementation, `rounds` times in turn (a fresh process each time), so
    that the shared machine's drift affects them all alike; medians over all samples."""
    samples: dict[str, dict] = {}
    for _ in range(rounds):
        for impl in impls:
            r = run_one(cell, size, impl, repeats)
            if "error" in r:
                samples[impl] = r
            elif "error" not in samples.get(impl, {}):
                kept = samples.setdefault(impl, dict(r, train_ms=[], forward_ms=[]))
                kept["train_ms"] += r["train_ms"]
                kept["forward_ms"] += r["forward_ms"]
    results = []
    for impl, r in samples.items():
        if "error" not in r:
            r["samples"] = len(r["train_ms"])
            r["train_ms"] = statistics.median(r["train_ms"])
            r["forward_ms"] = statistics.median(r["forward_ms"])
            r["gflops"] = r.pop("flops") / r["train_ms"] / 1e6
        results.append(r)
    return results


def table(results: list[dict]) -> str:
    lines = []
    key = lambda r: (r["cell"], r["size"])
    groups = {}
    for r in results:
        groups.setdefault(key(r), []).append(r)
    for (cell, size), rows in groups.items():
        B, H, T = SIZES[size]
        by = {r["impl"]: r for r in rows if "train_ms" in r}
        nn = by.get("torch.nn")
        lines.append(f"\n{cell}, {size} (B={B}, I=H={H}, T={T})")
        lines.append(f"  {'implementation':22s} {'train ms':>9s} {'x torch.nn':>10s} "
                     f"{'x bound':>8s} {'GFLOP/s':>8s} {'fwd ms':>8s} {'fwd x nn':>8s}  check")
        for r in rows:
            name = r["impl"] + (f" [{r['blas']}]" if r["impl"].split("/")[0] in ("bound", "cellc") else "")
            if "train_ms" not in r:
                lines.append(f"  {name:22s} {r.get('error', 'failed')}")
                continue
            suffix = "/" + r["impl"].split("/")[1] if "/" in r["impl"] else ""
            bound = by.get("bound" + suffix)
            ratio = lambda a, b, k: f"{a[k] / b[k]:.2f}" if b else "-"
            check = f"{r['check']:.0e}" if "check" in r else "-"
            lines.append(f"  {name:22s} {r['train_ms']:9.2f} {ratio(r, nn, 'train_ms'):>10s} "
                         f"{ratio(r, bound, 'train_ms'):>8s} {r['gflops']:8.1f} "
                         f"{r['forward_ms']:8.2f} {ratio(r, nn, 'forward_ms'):>8s}  {check}")
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
    ax.set_title("One training step (forward + BPTT), float32, 2 cores: lower is better")
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
    ap.add_argument("--impls", nargs="+", default=IMPLS + [f"bound/{AVX512}", f"cellc/{AVX512}"])
    ap.add_argument("--rounds", type=int, default=3, help="passes over all implementations")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per pass")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}", flush=True)
    results = []
    for cell in args.cells:
        for size in args.sizes:
            impls = [i for i in args.impls if available(cell, i)]
            for r in run_rounds(cell, size, impls, args.rounds, args.repeats):
                results.append(r)
                status = f"{r['train_ms']:.2f} ms" if "train_ms" in r else r.get("error")
                print(f"  {cell:14s} {size:7s} {r['impl']:22s} {status}", file=sys.stderr, flush=True)
    print(table(results))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"), "sizes": SIZES}
    (out / "bench.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    chart(results, out / "bench.png")
    print(f"\nwrote {out / 'bench.json'} and {out / 'bench.png'}")


if __name__ == "__main__":
    main()
