"""`cellc.layers.Layer`, the public name of `cellc.runtime.layers` (see the README)."""
from .runtime.layers import Layer

__all__ = ["Layer"]
