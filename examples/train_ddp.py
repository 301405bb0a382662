"""Data-parallel training of a cellc layer with PyTorch's DistributedDataParallel.

DDP is the engine: each process (rank) holds a copy of the model, runs its own shard of
every batch, and DDP averages the gradients across ranks during backward. cellc only has
to be a good citizen: its layer is a torch operator whose parameters are explicit inputs
(so DDP's gradient hooks fire), it pickles, and its BLAS runs on one thread per rank.

    torchrun --standalone --nproc_per_node=2 examples/train_ddp.py
    torchrun --standalone --nproc_per_node=2 examples/train_ddp.py --spec specs/mgu.toml --steps 50

The task is a character-level language model on a synthetic text (a repeated pangram,
randomly shifted): an embedding, a 2-layer recurrent stack of any spec, a linear head.
Rank 0 prints the loss and the time per step.
"""
import argparse
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import cellc.torch

ROOT = Path(__file__).resolve().parent.parent
TEXT = "the quick brown fox jumps over the lazy dog. "


class CharModel(nn.Module):
    def __init__(self, spec, vocab: int, hidden: int):
        super().__init__()
        self.emb = nn.Embedding(vocab, hidden)
        self.rnn = cellc.torch.RNN(spec, hidden, hidden, num_layers=2)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens):                      # [T, B] -> logits [T, B, vocab]
        return self.head(self.rnn(self.emb(tokens))[0])


def batch(generator, vocab: dict, T: int, B: int) -> torch.Tensor:
    """B windows of T + 1 characters at random offsets: [T + 1, B] token ids."""
    text = torch.tensor([vocab[c] for c in TEXT * (T // len(TEXT) + 2)])
    starts = torch.randint(0, len(TEXT), (B,), generator=generator)
    return torch.stack([text[s:s + T + 1] for s in starts.tolist()], dim=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=str(ROOT / "specs" / "lstm.toml"))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32, help="sequences per rank")
    ap.add_argument("--length", type=int, default=48)
    args = ap.parse_args()

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 1)))   # torchrun sets 1
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    vocab = {c: k for k, c in enumerate(sorted(set(TEXT)))}
    torch.manual_seed(0)                          # the same initial weights on every rank
    model = DistributedDataParallel(CharModel(args.spec, len(vocab), args.hidden))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    data = torch.Generator().manual_seed(1000 + rank)     # each rank its own shard
    loss_fn = nn.CrossEntropyLoss()
    times = []
    for step in range(args.steps):
        tokens = batch(data, vocab, args.length, args.batch)
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = model(tokens[:-1])
        loss = loss_fn(logits.reshape(-1, len(vocab)), tokens[1:].reshape(-1))
        loss.backward()                           # DDP averages the gradients here
        opt.step()
        times.append(time.perf_counter() - start)
        if rank == 0 and (step % 10 == 0 or step == args.steps - 1):
            print(f"step {step:4d}  loss {loss.item():.3f}  "
                  f"{sorted(times)[len(times) // 2] * 1e3:.1f} ms/step (median, {world} ranks)",
                  flush=True)
    dist.barrier()          # no rank tears gloo down while another still talks to it
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
