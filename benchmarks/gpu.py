"""The CUDA target on one NVIDIA GPU (written for an H200), in one short run: GPU time is
scarce, so everything fits well under 8 minutes (`--budget`, default 420 s).

    pip install --no-deps -e .          # on a machine whose Python has torch, numba,
    python benchmarks/gpu.py --out gpu.json   # numba-cuda, sympy, jinja2 (CuPy optional)

1. Correctness: each cell compiled for CUDA runs a small problem (T=5, B=3, H=8) on the
   GPU over torch tensors, float64 and float32, forward and backward, against cellc's
   float64 NumPy interpreter. A failure is printed and the timing goes on.
2. Speed, float32, (B, H, T) = (64, 256, 100) and (256, 1024, 100): a training step
   (forward + backward with an upstream gradient on every output) and a forward that
   saves nothing, for LSTM, GRU, the peephole LSTM and the layer-norm LSTM (spec-only
   cells: no cuDNN kernel exists for them), against
     cudnn     torch.nn.LSTM / torch.nn.GRU (cuDNN), where the cell has one;
     loop      the cell as a PyTorch user writes it (benchmarks/torch_cells.py), eager;
     compiled  that cell's step under torch.compile, the loop over steps in Python
               (skipped where its first call takes over `--compile-limit` seconds).
   Each implementation is timed in interleaved rounds (one call of each per round,
   CUDA-synchronised wall time), medians and spread; ratios are of medians measured in
   this run. The first call of each (Numba's and Inductor's compiles) is reported apart.

Targets (issue 18): cellc within 1.5x of cuDNN on LSTM and GRU; on spec-only cells at
least 5x faster than the eager loop and faster than torch.compile.

`--dry-run` runs the whole script on a machine without a GPU, so that it is known to
work before GPU time is spent on it: Numba's CUDA simulator runs the kernels, torch's
CPU tensors stand for CUDA tensors, and every figure it prints means nothing (it says so).
`--impls` and `--sizes BxHxT` trim the run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CELLS = ("lstm", "gru", "peephole_lstm", "ln_lstm")
SIZES = {"medium": (64, 256, 100), "large": (256, 1024, 100)}     # (B, H, T), I = H
CUDNN = {"lstm", "gru"}
IMPLS = ("cellc", "cudnn", "loop", "compiled")
DEVICE = "cuda"          # "cpu" in a dry run


def synchronize(torch):
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def machine(torch) -> dict:
    import numba
    gpu = DEVICE == "cuda"
    info = {"gpu": torch.cuda.get_device_name(0) if gpu else "none: DRY RUN in the simulator",
            "capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if gpu else None,
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "numba": numba.__version__,
            "python": platform.python_version(), "cpu": platform.processor() or platform.machine()}
    try:
        import numba_cuda
        info["numba_cuda"] = numba_cuda.__version__
    except (ImportError, AttributeError):
        info["numba_cuda"] = "?"
    try:
        import cupy
        info["cupy"] = cupy.__version__
    except ImportError:
        info["cupy"] = None
    return info


def spec_path(name: str) -> Path:
    return ROOT / "specs" / f"{name}.toml"


def problem(cpu, B, H, T, dtype, seed):
    """Parameters, input, states and upstream gradient as NumPy (the CPU module's
    init_params: every implementation gets the same numbers)."""
    rng = np.random.default_rng(seed)
    sizes = {d: H for d in cpu.DIMS}
    params = cpu.init_params(dtype=dtype, seed=seed, **sizes)
    x = rng.normal(size=(T, B, H)).astype(dtype)
    states = {s: rng.normal(scale=0.5, size=(B, H)).astype(dtype) for s in cpu.STATES}
    dy = rng.normal(size=(T, B, H)).astype(dtype)
    return params, x, states, dy


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def check(name, module, cpu, cell, to_device, to_host) -> dict:
    """Largest relative error of outputs and gradients against the interpreter, per dtype."""
    from cellc.reference import interpreter
    errors = {}
    for dtype in (np.float64, np.float32):
        params, x, states, dy = problem(cpu, 3, 8, 5, dtype, seed=1)
        y, final, cache = module.forward({k: to_device(v) for k, v in params.items()}, to_device(x),
                                         {k: to_device(v) for k, v in states.items()})
        grads = module.backward(cache, to_device(dy))
        y_ref, final_ref, tape = interpreter.forward(cell, params, {"x": x}, states)
        dp, dx, d0 = interpreter.backward(cell, tape, dy, None)
        worst = rel_err(to_host(y), y_ref)
        worst = max([worst] + [rel_err(to_host(final[k]), final_ref[k]) for k in final_ref]
                    + [rel_err(to_host(grads.params[k]), dp[k]) for k in dp]
                    + [rel_err(to_host(grads.inputs["x"]), dx["x"])]
                    + [rel_err(to_host(grads.states[k]), d0[k]) for k in d0])
        errors[np.dtype(dtype).name] = worst
    return errors


def check_rnn(torch) -> dict:
    """cellc.torch.RNN on the GPU (the CUDA target behind PyTorch's operators) against
    torch.nn.LSTM with the same weights: a 2-layer bidirectional LSTM, float64, outputs,
    final states and the input's gradient."""
    import cellc.torch
    torch.manual_seed(0)
    ref = torch.nn.LSTM(8, 16, num_layers=2, bidirectional=True, dtype=torch.float64).to(DEVICE)
    rnn = cellc.torch.RNN.from_torch(ref, spec_path("lstm"))
    assert next(rnn.parameters()).device.type == DEVICE
    x = torch.randn(7, 3, 8, dtype=torch.float64, device=DEVICE)
    out = {}
    for name, module in (("cellc", rnn), ("torch", ref)):
        xi = x.clone().requires_grad_(True)
        y, (h, c) = module(xi)
        (y.square().sum() + h.sum() + c.sum()).backward()
        out[name] = [y, h, c, xi.grad] + [p.grad for p in module.parameters()]
    return {"rnn_vs_nn_lstm": max(rel_err(a.detach().cpu().numpy(), b.detach().cpu().numpy())
                                  for a, b in zip(out["cellc"][:4], out["torch"][:4]))}


def implementations(name, module, cpu, B, H, T, torch, compile_limit, report, wanted):
    """{implementation: (train, forward)} for one cell and size, float32 on the GPU."""
    import torch_cells
    params, x, states, dy = problem(cpu, B, H, T, np.float32, seed=0)
    dev = DEVICE
    xt, dyt = torch.from_numpy(x).to(dev), torch.from_numpy(dy).to(dev)
    st = [torch.from_numpy(states[s]).to(dev) for s in cpu.STATES]
    out = {}

    p = {k: torch.from_numpy(v).to(dev) for k, v in params.items()}
    s0 = dict(zip(cpu.STATES, st))

    def cellc_train():
        _, _, cache = module.forward(p, xt, s0)
        module.backward(cache, dyt)

    def cellc_forward():
        module.forward(p, xt, s0, need_grad=False)
    out["cellc"] = (cellc_train, cellc_forward)

    if name in CUDNN and "cudnn" in wanted:
        layer = torch_cells.nn_layer(cpu, {k: torch.from_numpy(v) for k, v in params.items()},
                                     H, H).to(dev)
        hs = tuple(s[None] for s in st)
        hs = hs if len(hs) > 1 else hs[0]

        def cudnn_train():
            layer.zero_grad(set_to_none=True)
            layer(xt, hs)[0].backward(dyt)

        def cudnn_forward():
            with torch.no_grad():
                layer(xt, hs)
        out["cudnn"] = (cudnn_train, cudnn_forward)

    fn = torch_cells.CELLS[name]
    leaves = {k: v.clone().requires_grad_(True) for k, v in p.items()}

    def loop_train():
        for v in leaves.values():
            v.grad = None
        fn(xt, st, leaves)[0].backward(dyt)

    def loop_forward():
        with torch.no_grad():
            fn(xt, st, leaves)
    if "loop" in wanted:
        out["loop"] = (loop_train, loop_forward)
    if "compiled" not in wanted:
        return out
    step = torch.compile(fn, dynamic=False)

    def stepped():
        s, ys = st, []
        for t in range(T):
            y, s = step(xt[t:t + 1], s, leaves)
            ys.append(y)
        return torch.cat(ys)

    def compiled_train():
        for v in leaves.values():
            v.grad = None
        stepped().backward(dyt)

    def compiled_forward():
        with torch.no_grad():
            stepped()
    t0 = time.perf_counter()
    try:
        compiled_train()
        compiled_forward()
        synchronize(torch)
        first = time.perf_counter() - t0
        report["compile_s"] = round(first, 1)
        if first <= compile_limit:
            out["compiled"] = (compiled_train, compiled_forward)
        else:
            report["compiled"] = f"skipped: first call took {first:.0f} s (limit {compile_limit} s)"
    except Exception as err:            # a compile that fails is reported, not fatal
        report["compiled"] = f"failed: {failure(err)}"
    return out


def failure(err: Exception) -> str:
    import traceback
    return f"{type(err).__name__}: {str(err)[:300]} | " + " <- ".join(
        f"{Path(f.filename).name}:{f.lineno}" for f in traceback.extract_tb(err.__traceback__)[-4:])


def timed(impls: dict, torch, rounds: int) -> dict:
    """Interleaved rounds: each implementation's train and forward once per round,
    synchronised; the first call of each (compiles) is timed apart."""
    def seconds(f):
        synchronize(torch)
        t0 = time.perf_counter()
        f()
        synchronize(torch)
        return time.perf_counter() - t0

    calls = {(k, mode): f for k, (train, forward) in impls.items()
             for mode, f in (("train", train), ("forward", forward))}
    first = {key: seconds(f) for key, f in calls.items()}
    for f in calls.values():
        f()                           # a second warm-up call
    times = {key: [] for key in calls}
    for _ in range(rounds):
        for key, f in calls.items():
            times[key].append(seconds(f))
    return {f"{k} {mode}": {"median_ms": 1e3 * statistics.median(v), "min_ms": 1e3 * min(v),
                            "max_ms": 1e3 * max(v), "first_s": round(first[(k, mode)], 3)}
            for (k, mode), v in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--sizes", default=",".join(SIZES), help="names, or BxHxT")
    parser.add_argument("--impls", default=",".join(IMPLS), help="cellc is always run")
    parser.add_argument("--dry-run", action="store_true",
                        help="no GPU: the simulator and torch's CPU tensors; figures mean nothing")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--budget", type=float, default=420.0, help="seconds; later items are skipped")
    parser.add_argument("--compile-limit", type=float, default=60.0)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.dry_run:            # before numba.cuda is imported
        global DEVICE
        DEVICE = "cpu"
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    import torch

    import cellc
    from cellc.frontend.spec import read_spec
    from cellc.passes import split
    if not torch.cuda.is_available() and not args.dry_run:
        sys.exit("no CUDA GPU here: this benchmark measures the CUDA target on a GPU "
                 "(--dry-run tries the script in the simulator)")
    results = {"machine": machine(torch), "checks": {}, "timings": [], "skipped": []}
    print(json.dumps(results["machine"]), flush=True)
    cells = args.cells.split(",")
    modules = {}
    for name in cells:
        t0 = time.perf_counter()
        module = cellc.load(spec_path(name), target="cuda")
        cpu = cellc.load(spec_path(name))
        modules[name] = (module, cpu)
        try:
            errors = check(name, module, cpu, split(read_spec(spec_path(name))),
                           lambda a: torch.from_numpy(a).to(DEVICE), lambda t: t.cpu().numpy())
        except Exception as err:        # reported, and the run goes on to the timings
            errors = {"float64": float("nan"), "float32": float("nan"), "error": failure(err)}
        ok = errors["float64"] < 1e-9 and errors["float32"] < 1e-4
        results["checks"][name] = {**errors, "ok": ok, "seconds": round(time.perf_counter() - t0, 1)}
        print(f"check {name}: {'ok' if ok else 'FAILED'} {errors} "
              f"({time.perf_counter() - t0:.1f} s with compiles)", flush=True)
    try:
        results["checks"]["torch.RNN"] = check_rnn(torch)
    except Exception as err:
        results["checks"]["torch.RNN"] = {"error": failure(err)}
    print(f"check cellc.torch.RNN on cuda: {results['checks']['torch.RNN']}", flush=True)
    for size in args.sizes.split(","):
        B, H, T = SIZES[size] if size in SIZES else map(int, size.split("x"))
        for name in cells:
            if time.perf_counter() - start > args.budget:
                results["skipped"].append(f"{name} {size}: over the {args.budget:.0f} s budget")
                print(f"skip {name} {size}: budget spent", flush=True)
                continue
            module, cpu = modules[name]
            report = {"cell": name, "size": size, "B": B, "H": H, "T": T}
            try:
                impls = implementations(name, module, cpu, B, H, T, torch, args.compile_limit, report,
                                    args.impls.split(","))
                report.update(timed(impls, torch, args.rounds))
            except Exception as err:    # one cell's failure costs its row, not the run
                report["error"] = failure(err)
            results["timings"].append(report)
            print(json.dumps(report), flush=True)
            if DEVICE == "cuda":
                torch.cuda.empty_cache()
    print(table(results["timings"]))
    if args.dry_run:
        print("DRY RUN: kernels in Numba's CUDA simulator, torch on the CPU; no figure above "
              "measures a GPU")
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


def table(timings) -> str:
    rows = ["cell            size    impl       train ms (min-max)        forward ms (min-max)"
            "     train/cellc  fwd/cellc"]
    for r in timings:
        if "cellc train" not in r:
            rows.append(f"{r['cell']:15s} {r['size']:7s} failed: {r.get('error')}")
            continue
        for impl in ("cellc", "cudnn", "loop", "compiled"):
            tr, fw = r.get(f"{impl} train"), r.get(f"{impl} forward")
            if tr is None:
                continue
            base_t, base_f = r["cellc train"]["median_ms"], r["cellc forward"]["median_ms"]
            rows.append(f"{r['cell']:15s} {r['size']:7s} {impl:9s} "
                        f"{tr['median_ms']:8.2f} ({tr['min_ms']:.2f}-{tr['max_ms']:.2f})   "
                        f"{fw['median_ms']:8.2f} ({fw['min_ms']:.2f}-{fw['max_ms']:.2f})   "
                        f"{tr['median_ms'] / base_t:8.2f}  {fw['median_ms'] / base_f:8.2f}")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
