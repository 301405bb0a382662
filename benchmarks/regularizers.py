"""What zoneout and recurrent dropout cost: one training step of a one-layer `Layer`
(forward + backward through time, float32, masks drawn every step as in training),
against the same layer without regularizers, measured in the same run.

    python benchmarks/regularizers.py                       # lstm and gru, medium
    python benchmarks/regularizers.py --cells lstm --size large --repeats 20

Variants: plain; zoneout of every state (rate 0.1); recurrent dropout of every state a
matrix product reads (0.25); both. And, for the LSTM, the same regularized step as a
PyTorch user writes it (a Python loop with autograd: torch.nn.LSTM has neither). The
variants take turns, run by run, so drift on a shared machine affects them alike; each
reports its median, and its ratio to the plain layer's median.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from cellc.layers import Layer  # noqa: E402

SIZES = {"small": (16, 64, 50), "medium": (64, 256, 100), "large": (128, 512, 100)}  # B, H, T
VARIANTS = {"plain": {}, "zoneout": {"zoneout": 0.1}, "recurrent dropout":
            {"recurrent_dropout": 0.25}, "both": {"zoneout": 0.1, "recurrent_dropout": 0.25}}


def cellc_step(cell: str, options: dict, B: int, H: int, T: int):
    layer = Layer(ROOT / "specs" / f"{cell}.toml", **options)
    params = layer.init_params(np.float32, seed=0, I=H, H=H)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(T, B, H)).astype(np.float32)
    dy = rng.normal(size=(T, B, H)).astype(np.float32)
    seeds = iter(range(10**9))

    def step():
        y, _, cache = layer.forward(params, x, training=True, seed=next(seeds))
        return layer.backward(cache, dy)
    return step


def torch_lstm_step(B: int, H: int, T: int, zoneout=0.1, dropout=0.25):
    """The LSTM with zoneout of h and c and recurrent dropout of h, as Krueger et al. and
    Gal & Ghahramani write it, in a PyTorch loop (gates fused in one matmul each)."""
    import torch
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    wx = (torch.randn(H, 4 * H, generator=g) / H ** 0.5).requires_grad_()
    wh = (torch.randn(H, 4 * H, generator=g) / H ** 0.5).requires_grad_()
    b = torch.zeros(4 * H, requires_grad=True)
    x = torch.randn(T, B, H, generator=g)
    dy = torch.randn(T, B, H, generator=g)

    def step():
        h = c = torch.zeros(B, H)
        keep = (torch.rand(B, H) >= dropout).float() / (1 - dropout)
        zh, zc = (torch.rand(T, B, H) < zoneout).float(), (torch.rand(T, B, H) < zoneout).float()
        ys = []
        pre_x = x @ wx
        for t in range(T):
            i, f, gg, o = (pre_x[t] + (h * keep) @ wh + b).chunk(4, 1)
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
            h_new = torch.sigmoid(o) * torch.tanh(c_new)
            h = zh[t] * h + (1 - zh[t]) * h_new
            c = zc[t] * c + (1 - zc[t]) * c_new
            ys.append(h)
        for p in (wx, wh, b):
            p.grad = None
        (torch.stack(ys) * dy).sum().backward()
    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", nargs="+", default=["lstm", "gru"])
    ap.add_argument("--size", default="medium", choices=list(SIZES))
    ap.add_argument("--repeats", type=int, default=15, help="timed runs of each variant")
    args = ap.parse_args()
    B, H, T = SIZES[args.size]
    print(f"training step, {args.size} (B={B}, H=I={H}, T={T}), float32, "
          f"median of {args.repeats} interleaved runs")
    for cell in args.cells:
        steps = {name: cellc_step(cell, options, B, H, T) for name, options in VARIANTS.items()}
        if cell == "lstm":
            steps["torch loop, both"] = torch_lstm_step(B, H, T)
        for step in steps.values():          # compile, fill caches and workspaces
            step()
            step()
        times = {name: [] for name in steps}
        for _ in range(args.repeats):
            for name, step in steps.items():
                t0 = time.perf_counter()
                step()
                times[name].append((time.perf_counter() - t0) * 1e3)
        plain = statistics.median(times["plain"])
        print(f"\n{cell}")
        print(f"  {'variant':<20} {'median ms':>10} {'x plain':>8}")
        for name, ms in times.items():
            median = statistics.median(ms)
            print(f"  {name:<20} {median:>10.2f} {median / plain:>8.2f}")


if __name__ == "__main__":
    main()
