"""Run by tests/test_torch_module.py: DistributedDataParallel over 2 processes (gloo,
127.0.0.1) training a model with a cellc layer, the model itself passed to the ranks
through mp.spawn (so it pickles) and copied in each rank.

    python tests/ddp_check.py OUT_DIR

Each rank takes its half of one float64 batch and writes its DDP gradients
(`grads{rank}.pt`), then its parameters after 3 SGD steps (`params{rank}.pt`); rank 0
also writes the gradients of the same model run in one process on the whole batch
(`reference.pt`), which DDP's averaged gradients must equal.
"""
import copy
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cellc.torch  # noqa: E402

T, B, I, H = 6, 4, 5, 7


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = cellc.torch.RNN(str(ROOT / "specs" / "gru.toml"), I, H, num_layers=2,
                                   bidirectional=True)
        self.head = nn.Linear(2 * H, 1)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


def loss_of(model, x, y):
    return ((model(x) - y) ** 2).mean()


def rank_main(rank, shared, port, out):
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    # mp.spawn hands each rank the model with its tensors in shared memory (one copy for
    # all ranks, as Hogwild wants); DDP wants a copy per rank.
    model = copy.deepcopy(shared)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(T, 2 * B, I, generator=g), torch.randn(T, 2 * B, 1, generator=g)
    if rank == 0:
        torch.save({n: p.detach().clone() for n, p in model.named_parameters()},
                   out / "initial.pt")
        reference = copy.deepcopy(model)
        loss_of(reference, x, y).backward()
        torch.save({n: p.grad for n, p in reference.named_parameters()}, out / "reference.pt")
    ddp = DistributedDataParallel(model)
    part = slice(rank * B, (rank + 1) * B)
    loss_of(ddp, x[:, part], y[:, part]).backward()
    torch.save({n: p.grad for n, p in model.named_parameters()}, out / f"grads{rank}.pt")
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    for step in range(3):
        opt.zero_grad()
        xs = torch.randn(T, B, I, generator=torch.Generator().manual_seed(step * 2 + rank))
        loss_of(ddp, xs, torch.zeros(T, B, 1)).backward()
        opt.step()
    torch.save(dict(model.named_parameters()), out / f"params{rank}.pt")
    dist.barrier()          # no rank tears gloo down while another still talks to it
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    mp.spawn(rank_main, args=(Model(), free_port, Path(sys.argv[1])), nprocs=2, join=True)
