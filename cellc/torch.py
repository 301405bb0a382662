"""`cellc.torch.RNN`, the public name of `cellc.runtime.torch` (see the README)."""
from .runtime.torch import RNN, grads_from_torch, set_blas_threads, weights_from_torch, weights_to_torch

__all__ = ["RNN", "grads_from_torch", "set_blas_threads", "weights_from_torch",
           "weights_to_torch"]
