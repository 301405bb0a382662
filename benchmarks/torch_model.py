"""cellc layers inside a PyTorch model, against torch.nn's and a PyTorch loop, side by side.

    python benchmarks/torch_model.py                         # every row, 3 rounds
    python benchmarks/torch_model.py --rows train ddp --rounds 2
    python benchmarks/torch_model.py --repo /path/to/an/older/checkout   # A/B a commit
    python benchmarks/torch_model.py --rows train --blas-threads 2 --busy  # thread policy

The model is a small character-level language model: an embedding (V=64, E=128), a
2-layer recurrent stack (H=128) and a linear head, trained with Adam on batches of
B=32 sequences of T=64 steps. The stack is cellc's LSTM, GRU or MGU (a cell no
framework ships), or torch.nn.LSTM/GRU, or a PyTorch loop for the MGU.

Rows (each implementation in fresh processes, rounds interleaved, medians of the
steps after a warm-up; the spread is the rounds' smallest and largest median):
- `train`: eager training step, torch's default threads.
- `compile`: `torch.compile(model, fullgraph=True)` (falling back to graph breaks
  where that fails): the first call (compile included), the first call at a new
  sequence length (a recompile, if any), and the compiled step.
- `ddp`: DistributedDataParallel, 2 ranks on this machine (gloo, 127.0.0.1), one
  torch thread per rank, each rank a batch of B=32; the step time of rank 0.
- `inference`: a forward under `torch.inference_mode()`, LSTM, T=4000, B=64,
  I=H=256, float32: the second call's time (the first's beside it: it touches fresh
  memory) and how far the process's peak memory (max RSS) rose over both.
`--blas-threads N` runs cellc's BLAS on N threads (`cellc.torch.set_blas_threads`; the
default is 1); `--busy` keeps one core busy with another process while the rows run, as
on a shared machine. Prints the machine, its vector extensions, the BLAS and the load
average.
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
V, E, H, LAYERS, B, T = 64, 128, 128, 2, 32, 64
IMPLS = ["cellc:lstm", "torch:lstm", "cellc:gru", "torch:gru", "cellc:mgu", "loop:mgu"]


# ---- the model (children only) ------------------------------------------------------
def build(impl: str, repo: Path):
    import torch
    from torch import nn

    kind, cell = impl.split(":")

    class MGULoop(nn.Module):
        """Zhou et al. 2016, eq. 5, as a PyTorch user writes it: a loop over time steps,
        the input projections of all steps hoisted."""

        def __init__(self, inputs, hidden, layers):
            super().__init__()
            self.weights = nn.ParameterList()
            for layer in range(layers):
                n = inputs if layer == 0 else hidden
                for shape in ((n, hidden), (hidden, hidden), (hidden,)) * 2:
                    bound = hidden ** -0.5
                    self.weights.append(nn.Parameter(torch.empty(shape).uniform_(-bound, bound)))

        def forward(self, x):
            for layer in range(len(self.weights) // 6):
                W_xf, W_hf, b_f, W_xh, W_hh, b_h = self.weights[6 * layer:6 * layer + 6]
                xf, xh = x @ W_xf + b_f, x @ W_xh + b_h
                h, outs = x.new_zeros(x.shape[1], W_hf.shape[0]), []
                for t in range(x.shape[0]):
                    f = torch.sigmoid(xf[t] + h @ W_hf)
                    h = (1 - f) * h + f * torch.tanh(xh[t] + (f * h) @ W_hh)
                    outs.append(h)
                x = torch.stack(outs)
            return x, h

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(V, E)
            if kind == "cellc":
                import cellc.torch
                if os.environ.get("CELLC_BENCH_BLAS_THREADS"):
                    cellc.torch.set_blas_threads(int(os.environ["CELLC_BENCH_BLAS_THREADS"]))
                self.rnn = cellc.torch.RNN(str(repo / "specs" / f"{cell}.toml"), E, H, LAYERS)
            elif kind == "torch":
                self.rnn = getattr(nn, cell.upper())(E, H, LAYERS)
            else:
                self.rnn = MGULoop(E, H, LAYERS)
            self.head = nn.Linear(H, V)

        def forward(self, tokens):
            y, _ = self.rnn(self.emb(tokens))
            return self.head(y)

    torch.manual_seed(0)
    return Model()


def batches(seed: int, steps: int, length: int = T):
    import torch
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, V, (length + 1, B), generator=g) for _ in range(steps)]


def step_fn(model):
    import torch
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(tokens):
        opt.zero_grad(set_to_none=True)
        logits = model(tokens[:-1])
        loss = loss_fn(logits.reshape(-1, V), tokens[1:].reshape(-1))
        loss.backward()
        opt.step()
        return loss.detach()
    return step


def timed(step, data):
    wall, cpu = [], []
    for tokens in data:
        w, c = time.perf_counter(), time.process_time()
        step(tokens)
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return wall, cpu


def child_train(impl, repo, compiled):
    import torch
    model = build(impl, repo)
    out = {}
    if compiled:
        import torch._dynamo
        try:
            explained = torch._dynamo.explain(model)(batches(1, 1)[0][:-1])
            out["graph_breaks"] = explained.graph_break_count
        except Exception as err:             # noqa: BLE001 - reported, not hidden
            out["graph_breaks"] = f"explain failed: {type(err).__name__}"
        torch._dynamo.reset()
        try:
            run = torch.compile(model, fullgraph=True)
            step = step_fn(run)
            w = time.perf_counter()
            step(batches(2, 1)[0])
            out["fullgraph"] = True
        except Exception as err:             # noqa: BLE001
            out["fullgraph"] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
            torch._dynamo.reset()
            run = torch.compile(model)
            step = step_fn(run)
            w = time.perf_counter()
            step(batches(2, 1)[0])
        out["first_s"] = time.perf_counter() - w
        w = time.perf_counter()
        step(batches(3, 1, T // 2)[0])         # a new sequence length
        out["new_shape_s"] = time.perf_counter() - w
    else:
        step = step_fn(model)
    step(batches(4, 1)[0])
    step(batches(5, 1)[0])
    out["wall"], out["cpu"] = timed(step, batches(6, 15))
    return out


def child_ddp_rank(rank, impl, repo, port, result):
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    model = DistributedDataParallel(build(impl, repo))
    step = step_fn(model)
    for tokens in batches(10 + rank, 3):
        step(tokens)
    wall, cpu = timed(step, batches(20 + rank, 10))
    if rank == 0:
        Path(result).write_text(json.dumps({"wall": wall, "cpu": cpu}))
    dist.barrier()
    dist.destroy_process_group()


def child_ddp(impl, repo):
    import socket
    import tempfile

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as d:
        result = os.path.join(d, "rank0.json")
        mp.spawn(child_ddp_rank, args=(impl, repo, port, result), nprocs=2, join=True)
        return json.loads(Path(result).read_text())


def child_inference(impl, repo):
    import resource

    import torch
    kind = impl.split(":")[0]
    Ti, Bi, Hi = 4000, 64, 256
    torch.manual_seed(0)
    if kind == "cellc":
        import cellc.torch
        if os.environ.get("CELLC_BENCH_BLAS_THREADS"):
            cellc.torch.set_blas_threads(int(os.environ["CELLC_BENCH_BLAS_THREADS"]))
        rnn = cellc.torch.RNN(str(repo / "specs" / "lstm.toml"), Hi, Hi)
        with torch.inference_mode():              # compile and warm up at a small size
            rnn(torch.randn(10, Bi, Hi))
    else:
        rnn = torch.nn.LSTM(Hi, Hi)
    x = torch.randn(Ti, Bi, Hi)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = []
    for _ in range(2):                   # the first call touches fresh memory
        w = time.perf_counter()
        with torch.inference_mode():
            y, _ = rnn(x)
        seconds.append(time.perf_counter() - w)
        del y
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"s": seconds[1], "first_s": seconds[0], "peak_rise_mb": (peak - before) / 1024,
            "output_mb": Ti * Bi * Hi * 4 / 2**20}


# ---- the parent ---------------------------------------------------------------------
def machine() -> str:
    import numpy as np
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "")
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE"
    blas = ""
    try:
        from threadpoolctl import threadpool_info
        blas = ", ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, "
                         f"{i.get('num_threads')} threads)" for i in threadpool_info()
                         if i.get("user_api") == "blas")
    except ImportError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {vector}; numpy {np.__version__}; BLAS: {blas}; "
            f"load average {os.getloadavg()[0]:.2f}")


def run_child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                          text=True, timeout=900)
    if proc.returncode:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summary(values_per_round: list[list[float]]) -> tuple[float, float, float]:
    medians = [statistics.median(v) * 1e3 for v in values_per_round]
    return statistics.median(medians), min(medians), max(medians)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", nargs="+", default=["train", "compile", "ddp", "inference"])
    ap.add_argument("--impls", nargs="+", default=IMPLS)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repo", type=Path, default=ROOT)
    ap.add_argument("--blas-threads", type=int)
    ap.add_argument("--busy", action="store_true")
    ap.add_argument("--child", nargs="+")
    args = ap.parse_args()
    if args.child:
        sys.path.insert(0, str(args.repo))
        what, impl = args.child[:2]
        result = {"train": lambda: child_train(impl, args.repo, False),
                  "compile": lambda: child_train(impl, args.repo, True),
                  "ddp": lambda: child_ddp(impl, args.repo),
                  "inference": lambda: child_inference(impl, args.repo)}[what]()
        print(json.dumps(result))
        return
    if args.blas_threads:
        os.environ["CELLC_BENCH_BLAS_THREADS"] = str(args.blas_threads)
    busy = None
    if args.busy:
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    print(f"# {machine()}")
    print(f"# cellc's BLAS threads: {args.blas_threads or 'default'}"
          + ("; one core kept busy by another process" if busy else ""))
    print(f"# repo {args.repo}; V={V} E={E} H={H} layers={LAYERS} B={B} T={T}; "
          f"rounds {args.rounds}")
    for row in args.rows:
        impls = ["cellc:lstm", "torch:lstm"] if row == "inference" else args.impls
        results = {i: [] for i in impls}
        for _ in range(args.rounds):
            for impl in impls:
                results[impl].append(run_child([row, impl, "--repo", str(args.repo)]))
        print(f"\n## {row} (load average now {os.getloadavg()[0]:.2f})")
        base = {}
        for impl in impls:
            runs = [r for r in results[impl] if "error" not in r]
            if not runs:
                print(f"{impl:12s} failed: {results[impl][0]['error']}")
                continue
            if row == "inference":
                s = statistics.median(r["s"] for r in runs)
                first = statistics.median(r.get("first_s", r["s"]) for r in runs)
                mb = statistics.median(r["peak_rise_mb"] for r in runs)
                print(f"{impl:12s} {s:7.2f} s (first call {first:5.2f} s)   peak memory "
                      f"+{mb:7.0f} MB   (output {runs[0]['output_mb']:.0f} MB)")
                continue
            med, lo, hi = summary([r["wall"] for r in runs])
            cpu, _, _ = summary([r["cpu"] for r in runs])
            ref = base.setdefault(impl.split(":")[1], med)
            line = (f"{impl:12s} step {med:8.2f} ms  [{lo:.2f}, {hi:.2f}]  cpu {cpu:8.2f} ms  "
                    f"x{med / ref:5.2f} of the first {impl.split(':')[1]} row")
            if row == "compile":
                first = statistics.median(r["first_s"] for r in runs)
                again = statistics.median(r["new_shape_s"] for r in runs)
                line += (f"  first call {first:6.1f} s, new length {again:6.1f} s, "
                         f"breaks {runs[0]['graph_breaks']}, fullgraph {runs[0]['fullgraph']}")
            print(line)
    if busy:
        busy.kill()


if __name__ == "__main__":
    main()
