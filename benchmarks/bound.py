"""The GEMM lower bound of a cell's training step and forward pass, as a compiled loop.

Only the GEMMs that any implementation of the cell must do, made with the very BLAS calls
cellc makes: the input projections of all steps as one GEMM, T recurrent products forward
and T backward in a Numba loop through the generated module's `_gemm` (numpy's OpenBLAS,
cblas_?gemm), then the input gradients and the weight gradients as big GEMMs after the
loop (numpy's matmul, as in cellc's drivers). Backward products take each weight's
transpose made contiguous once, as cellc does: OpenBLAS's AVX-512 kernels are much slower
on a transposed operand.

The GEMMs are the cell's own fused GEMMs, read from cellc's plan. The bound this replaces
ran its time loop in Python over np.matmul: on an AMD Zen 3 (issue 17) that was 15-25 %
slower than a compiled loop, so ratios against it flattered cellc; on the 2-core Xeon of
the README, 1-2 % (LSTM, small and medium, one thread).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numba as nb
import numpy as np


def gemm_shapes(plan, sizes: dict[str, int]) -> list[tuple[str, int, int]]:
    """(kind, rows of the weight, columns) of every fused GEMM in cellc's plan; kind is
    "static" (an input projection, hoisted over all steps) or "step" (recurrent)."""
    dim = plan.cell.dim_of()
    return [(kind, sizes[dim[g.operand]], sum(sizes[n.dim] for n in g.nodes))
            for kind, g in plan.gemms()]


def train_flops(plan, sizes, B: int, T: int) -> int:
    """Each GEMM runs three times in a training step: forward, the gradient of its operand
    and the gradient of its weight."""
    return sum(3 * 2 * T * B * n_in * w for _, n_in, w in gemm_shapes(plan, sizes))


def _step_loops(gemm):
    """The recurrent GEMMs' time loops, compiled, calling `gemm` (the module's `_gemm`)."""
    @nb.njit(nogil=True)
    def forward(xs, ws, outs):
        for t in range(xs[0].shape[0]):
            for k in range(len(xs)):
                gemm(xs[k][t], ws[k], outs[k][t], False)

    @nb.njit(nogil=True)
    def backward(d_outs, wts, d_xs):
        for t in range(d_outs[0].shape[0] - 1, -1, -1):
            for k in range(len(d_outs)):
                gemm(d_outs[k][t], wts[k], d_xs[k], False)
    return forward, backward


class Bound(NamedTuple):
    train: Callable[[], None]       # the GEMMs of a training step
    forward: Callable[[], None]     # ... of a forward pass
    gemms: list                     # per GEMM: kind, W, X, M = X @ W, dM, dW = X^T dM, ...


def make_bound(module, plan, sizes: dict[str, int], B: int, T: int, dtype=np.float32, seed=0):
    """The GEMMs of a training step and of a forward pass, on random data of the
    benchmark's sizes (the values do not change a GEMM's time)."""
    rng = np.random.default_rng(seed)
    gemm = module._gemm
    static, step = [], []
    for kind, n_in, w in gemm_shapes(plan, sizes):
        W = rng.normal(size=(n_in, w)).astype(dtype)
        g = dict(kind=kind, W=W, Wt=np.ascontiguousarray(W.T), dW=np.empty_like(W),
                 X=rng.normal(size=(T, B, n_in)).astype(dtype),
                 M=np.empty((T, B, w), dtype), dM=rng.normal(size=(T, B, w)).astype(dtype))
        if kind == "static":
            g["dX"] = np.empty((T, B, n_in), dtype)
            static.append(g)
        else:
            g["dX"] = np.empty((B, n_in), dtype)
            step.append(g)
    forward_steps, backward_steps = _step_loops(gemm)
    rows = T * B

    def forward():
        for g in static:
            gemm(g["X"].reshape(rows, -1), g["W"], g["M"].reshape(rows, -1), False)
        if step:
            forward_steps(tuple(g["X"] for g in step), tuple(g["W"] for g in step),
                          tuple(g["M"] for g in step))

    def train():
        forward()
        if step:
            backward_steps(tuple(g["dM"] for g in step), tuple(g["Wt"] for g in step),
                           tuple(g["dX"] for g in step))
        for g in static:                                          # input gradients
            gemm(g["dM"].reshape(rows, -1), g["Wt"], g["dX"].reshape(rows, -1), False)
        for g in static + step:                                   # weight gradients
            gemm(g["X"].reshape(rows, -1).T, g["dM"].reshape(rows, -1), g["dW"], False)
    return Bound(train, forward, static + step)
