"""cellc: write a gated recurrent cell as equations, get fast forward and backward kernels.

    import cellc
    lstm = cellc.load("specs/lstm.toml")      # compiled once, cached by content hash
    params = lstm.init_params(I=32, H=64)
    y, final, cache = lstm.forward(params, x)  # x: [T, B, I]
    grads = lstm.backward(cache, d_outputs=dy)
"""
__version__ = "0.1.0"

from .errors import CacheError, SpecError  # noqa: E402
from .runtime.loader import load  # noqa: E402

__all__ = ["CacheError", "SpecError", "load", "__version__"]
