"""Compiler passes, in pipeline order: split → schedule → derive (backward + saves)."""
from .derive import derive
from .schedule import schedule
from .split import split

__all__ = ["split", "schedule", "derive"]
