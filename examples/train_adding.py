"""Train recurrent cells on the adding problem (Hochreiter & Schmidhuber 1997) with cellc's
PyTorch layer, next to torch.nn.LSTM.

Each sequence has its own length (T/2 to T steps) and two channels: random numbers in
[0, 1], and a marker that is 1 at two steps, one in each half. The target is the sum of
the two marked numbers; always answering 1 scores a mean squared error of 1/6 = 0.167.
The batch is a PackedSequence, so each sequence's final state is read at its own end.

    pip install -e ".[examples]" && python examples/train_adding.py      # about 2 minutes

Trains an LSTM, a GRU and a peephole LSTM (a cell written only as a spec), each compiled
by cellc, and torch.nn.LSTM; prints the final losses and the time per epoch against
torch.nn.LSTM, and saves the loss curves to examples/adding_problem.png.
"""
import argparse
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from tqdm import tqdm

import cellc
import cellc.torch

ROOT = Path(__file__).resolve().parent.parent


def adding_batch(rng, batch, T):
    """(x [T, B, 2], lengths [B], target [B]) with markers in each sequence's two halves."""
    lengths = rng.integers(T // 2, T + 1, size=batch)
    x = np.zeros((T, batch, 2), np.float32)
    x[:, :, 0] = rng.random((T, batch))
    first = (rng.random(batch) * (lengths // 2)).astype(int)
    second = lengths // 2 + (rng.random(batch) * (lengths - lengths // 2)).astype(int)
    cols = np.arange(batch)
    x[first, cols, 1] = x[second, cols, 1] = 1
    for b, n in enumerate(lengths):
        x[n:, b] = 0                                   # padding
    target = x[first, cols, 0] + x[second, cols, 0]
    return torch.from_numpy(x), torch.from_numpy(lengths), torch.from_numpy(target)


class Regressor(nn.Module):
    """A recurrent layer, then a linear read-out of each sequence's final hidden state."""

    def __init__(self, rnn, hidden):
        super().__init__()
        self.rnn, self.head = rnn, nn.Linear(hidden, 1)

    def forward(self, x, lengths):
        _, final = self.rnn(pack_padded_sequence(x, lengths, enforce_sorted=False))
        h = final[0] if isinstance(final, tuple) else final
        return self.head(h[-1]).squeeze(-1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=60, help="sequence length T")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batches", type=int, default=100, help="batches per epoch")
    ap.add_argument("--plot", default=str(ROOT / "examples" / "adding_problem.png"))
    args = ap.parse_args()
    torch.set_num_threads(2)

    spec = ROOT / "specs"
    models = {
        "cellc LSTM": lambda: cellc.torch.RNN(spec / "lstm.toml", 2, args.hidden),
        "cellc GRU": lambda: cellc.torch.RNN(spec / "gru.toml", 2, args.hidden),
        "cellc peephole LSTM": lambda: cellc.torch.RNN(spec / "peephole_lstm.toml", 2, args.hidden),
        "torch.nn.LSTM": lambda: nn.LSTM(2, args.hidden),
    }
    test = adding_batch(np.random.default_rng(12345), 1024, args.steps)
    curves, epoch_times = {}, {}
    total = len(models) * args.epochs * args.batches
    with tqdm(total=total, unit="batch", desc="training") as bar:
        for name, make in models.items():
            torch.manual_seed(0)
            model = Regressor(make(), args.hidden)
            opt = torch.optim.Adam(model.parameters(), lr=3e-3)
            rng = np.random.default_rng(0)            # the same batches for every model
            curves[name], epoch_times[name] = [], []
            for _ in range(args.epochs):
                batches = [adding_batch(rng, args.batch, args.steps) for _ in range(args.batches)]
                t0 = time.perf_counter()
                for x, lengths, target in batches:
                    loss = nn.functional.mse_loss(model(x, lengths), target)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    bar.update()
                epoch_times[name].append(time.perf_counter() - t0)
                with torch.no_grad():
                    curves[name].append(float(nn.functional.mse_loss(model(*test[:2]), test[2])))
                bar.set_postfix(model=name, test_mse=f"{curves[name][-1]:.4f}")

    base = np.median(epoch_times["torch.nn.LSTM"])
    print(f"\nadding problem, T = {args.steps // 2}..{args.steps}, hidden {args.hidden}, "
          f"batch {args.batch}; test MSE (always answering 1 gives 0.167)")
    print(f"  {'model':22s} {'final test MSE':>14s} {'s per epoch':>12s} {'x torch.nn.LSTM':>16s}")
    for name in models:
        t = np.median(epoch_times[name])
        print(f"  {name:22s} {curves[name][-1]:14.4f} {t:12.2f} {t / base:16.2f}")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, curve in curves.items():
        ax.plot(np.arange(1, len(curve) + 1) * args.batches, curve, label=name,
                ls="--" if name.startswith("torch") else "-")
    ax.axhline(1 / 6, color="gray", lw=0.8, ls=":", label="always 1 (0.167)")
    ax.set_yscale("log")
    ax.set_xlabel("training batches")
    ax.set_ylabel("test mean squared error")
    ax.set_title(f"Adding problem, sequences of {args.steps // 2}-{args.steps} steps")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)
    print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
