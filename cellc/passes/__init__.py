"""Compiler passes, in pipeline order: (regularize →) split → schedule → derive
(backward + saves)."""
from .derive import derive
from .regularize import regularize
from .schedule import schedule
from .split import split

__all__ = ["regularize", "split", "schedule", "derive"]
