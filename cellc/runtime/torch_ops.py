"""A whole cellc layer as two PyTorch custom operators, `cellc::layer_forward` and
`cellc::layer_backward`, and the thread policy of cellc's BLAS inside PyTorch.

Why custom operators (`torch.library.custom_op`), not an autograd.Function:
  * torch.compile sees each as one opaque node, so Dynamo never traces into cellc's NumPy
    code: no graph break, and a fake implementation gives the output shapes, symbolic
    sizes included, so a model compiles once per shape class;
  * the parameters are explicit tensor inputs, so autograd, DDP's gradient hooks and
    parametrizations see them as they see torch.nn.LSTM's.

On CUDA tensors the operators run the layer's CUDA target (`Layer.on("cuda")`: the
cell's numba-cuda kernels, cuBLAS through torch), the tensors passed as they are.

The backward cache is NumPy arrays (or tensors), which no operator can return. The forward returns
a handle instead: a one-element tensor, saved for backward like any tensor, whose
memory's address names the cache in `_CACHES` (its value is always 0, so that two runs
of the operator give equal outputs, as torch.library.opcheck requires). A finalizer
ties the cache's lifetime to the handle's, so the cache is freed when autograd frees
the graph, whether or not backward ever ran.
"""
from __future__ import annotations

import os
import weakref
from contextlib import nullcontext
from functools import lru_cache
from typing import Optional

import numpy as np
import torch
from threadpoolctl import ThreadpoolController

from .layers import Layer

_LAYERS: dict[str, Layer] = {}          # Layer.key -> the layer the operators run
_CACHES: dict[int, dict] = {}           # a handle's address -> the layer's backward cache

ONCE = "trying to differentiate twice a function that was marked with @once_differentiable"


def register(layer: Layer) -> Layer:
    """The layer the operators run for `layer`'s key: the first one registered with it
    (every copy of a layer has the same key and the same compiled cell)."""
    return _LAYERS.setdefault(layer.key, layer)


# ---- threads ------------------------------------------------------------------------
_BLAS_THREADS = [1]


def set_blas_threads(n: int) -> None:
    """How many threads cellc's BLAS uses inside PyTorch (default 1; see the README's
    "Threads"). More pays only for large GEMMs on otherwise idle cores."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"set_blas_threads takes a positive integer, not {n!r}")
    _BLAS_THREADS[0] = n


@lru_cache(maxsize=1)
def cellc_blas():
    """The thread pool of the BLAS cellc's kernels call: numpy's own OpenBLAS."""
    libs, controller = os.path.dirname(np.__file__) + ".libs", ThreadpoolController()
    return controller.select(filepath=[lib.filepath for lib in controller.lib_controllers
                                       if lib.filepath.startswith(libs)])


def blas_threads():
    """The context cellc's kernels run in: their BLAS limited to `set_blas_threads`'
    count for the call, restored after (the caller's NumPy keeps its own setting)."""
    n, pool = _BLAS_THREADS[0], cellc_blas()
    if all(lib.num_threads <= n for lib in pool.lib_controllers):
        return nullcontext()
    return pool.limit(limits=n)


# ---- tensors and arrays ---------------------------------------------------------------
def _on_gpu(t: torch.Tensor) -> bool:
    """Whether the operators run the layer's CUDA target for this input: the one place
    that decides between the targets."""
    return t.is_cuda


def _for_layer(t: torch.Tensor | None) -> np.ndarray | torch.Tensor | None:
    """A tensor as the layer takes it: NumPy for the CPU target, the tensor itself for
    the CUDA target."""
    if t is None:
        return None
    if _on_gpu(t):
        return t.detach().contiguous()
    a = t.detach().numpy()
    return np.ascontiguousarray(a).reshape(a.shape)     # a scalar parameter stays 0-d


def _tensor(a: np.ndarray | torch.Tensor) -> torch.Tensor:
    """An array as an operator's output. A CUDA module's tensor that is a view (outputs and
    final states of one state sequence, biases' gradients of one column sum) is copied:
    an operator's outputs may not share memory."""
    if isinstance(a, torch.Tensor):
        return a.clone() if a._base is not None else a.contiguous()
    return torch.from_numpy(np.ascontiguousarray(a))


def _layer(key: str, x: torch.Tensor) -> Layer:
    """The layer registered under `key`, for the device of `x`."""
    layer = _LAYERS[key]
    return layer.on("cuda") if _on_gpu(x) else layer


# ---- the operators ---------------------------------------------------------------------
@torch.library.custom_op("cellc::layer_forward", mutates_args=(), device_types=("cpu", "cuda"))
def layer_forward(key: str, x: torch.Tensor, extras: list[torch.Tensor],
                  states: list[torch.Tensor], params: list[torch.Tensor],
                  lengths: Optional[torch.Tensor], seed: torch.Tensor, training: bool,
                  need_grad: bool) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Outputs, final states (in the cell's order) and the cache's handle. `extras` are
    the cell's inputs after the first (a time stamp), in the spec's order."""
    layer = _layer(key, x)
    names = layer.param_names()
    given = dict(zip(layer.cell.STATES, (_for_layer(s) for s in states)))
    inputs = _for_layer(x)
    if layer.extra_inputs:
        inputs = {layer.input: inputs, **dict(zip(layer.extra_inputs, map(_for_layer, extras)))}
    with blas_threads():
        y, finals, cache = layer.forward(
            dict(zip(names, (_for_layer(p) for p in params))), inputs, given,
            None if lengths is None else lengths.cpu().numpy(), training=training,
            seed=int(seed) if training else None, need_grad=need_grad)
    handle = torch.zeros(1, dtype=torch.int64, device=x.device)
    if need_grad:
        _CACHES[handle.data_ptr()] = cache
        weakref.finalize(handle, _CACHES.pop, handle.data_ptr(), None)
    return _tensor(y), [_tensor(finals[k]) for k in layer.cell.STATES], handle


@layer_forward.register_fake
def _(key, x, extras, states, params, lengths, seed, training, need_grad):
    layer = _LAYERS[key]
    shapes = dict(zip(layer.param_names(), (p.shape for p in params)))
    widths = {k: s.shape[-1] for k, s in zip(layer.cell.STATES, states)}
    y, finals = layer.output_shapes(shapes, x.shape[0], x.shape[1], x.shape[2], widths)
    return (x.new_empty(y), [x.new_empty(finals[k]) for k in layer.cell.STATES],
            x.new_empty((1,), dtype=torch.int64))


@torch.library.custom_op("cellc::layer_backward", mutates_args=(), device_types=("cpu", "cuda"))
def layer_backward(key: str, handle: torch.Tensor, x: torch.Tensor,
                   extras: list[torch.Tensor], states: list[torch.Tensor],
                   params: list[torch.Tensor], d_outputs: Optional[torch.Tensor],
                   d_finals: list[Optional[torch.Tensor]]
                   ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor],
                              list[torch.Tensor]]:
    """Gradients of the input, the other inputs, the initial states given and every
    parameter."""
    layer = _layer(key, x)
    cache = _CACHES.get(handle.data_ptr())
    if cache is None:
        raise RuntimeError("cellc: this layer's forward ran without saving for backward "
                           "(no_grad, inference_mode or nothing requiring grad), or its "
                           "cache is gone; run the forward again with grad enabled")
    d_states = {k: _for_layer(d) for k, d in zip(layer.cell.STATES, d_finals) if d is not None}
    with blas_threads():
        g = layer.backward(cache, _for_layer(d_outputs), d_states)
    dx = _tensor(g.inputs[layer.input])
    d_extras = [_tensor(g.inputs[k]) if k in g.inputs else torch.zeros_like(e)
                for k, e in zip(layer.extra_inputs, extras)]
    d0 = [_tensor(g.states[k]) for k in layer.cell.STATES][:len(states)]
    return dx, d_extras, d0, [_tensor(g.params[n]).reshape(p.shape)
                    for n, p in zip(layer.param_names(), params)]


@layer_backward.register_fake
def _(key, handle, x, extras, states, params, d_outputs, d_finals):
    return (x.new_empty(x.shape), [e.new_empty(e.shape) for e in extras],
            [s.new_empty(s.shape) for s in states],
            [p.new_empty(p.shape) for p in params])


# ---- autograd ---------------------------------------------------------------------------
def _setup_context(ctx, inputs, output):
    key, x, extras, states, params, lengths, seed, training, need_grad = inputs
    y, finals, handle = output
    ctx.key, ctx.counts = key, (len(extras), len(states), len(params))
    # Saved so that torch's version counters refuse in-place edits of any of them
    # between forward and backward, as for torch.nn.LSTM's own saved tensors.
    ctx.save_for_backward(handle, x, *extras, *states, *params, y, *finals)


def _split(items, counts):
    out, start = [], 0
    for n in counts:
        out.append(list(items[start:start + n]))
        start += n
    return out


def _backward(ctx, d_outputs, d_finals, d_handle):
    handle, x, *rest = ctx.saved_tensors
    extras, states, params = _split(rest, ctx.counts)
    dx, de, d0, dp = torch.ops.cellc.layer_backward(ctx.key, handle, x, extras, states, params,
                                                    d_outputs, list(d_finals))
    if torch.is_grad_enabled():      # create_graph=True: these gradients are not differentiable
        watched = [t for t in (x, *extras, *states, *params) if t.requires_grad]
        grads = [dx, *de, *d0, *dp]
        marked = torch._C._functions.DelayedError(ONCE, len(grads) + len(watched))(
            *grads, *watched)[:len(grads)]
        [dx], de, d0, dp = _split(marked, (1, len(de), len(d0), len(dp)))
    return None, dx, de, d0, dp, None, None, None, None


layer_forward.register_autograd(_backward, setup_context=_setup_context)
