"""The generated CUDA module: the same program tree as the CPU module's, printed by the
CUDA printer (`printer.py`), with the CUDA runtime (`runtime.py`, with the code both
targets share) and its own Jinja2 template; the context is the CPU module's
(`numba/module.py`), so the two modules carry the same metadata."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ... import naming
from ..numba import module as cpu_module
from . import printer

_RUNTIME = Path(__file__).with_name("runtime.py")


def runtime_source() -> str:
    return cpu_module.runtime_source(_RUNTIME)


@lru_cache(maxsize=1)
def target() -> cpu_module.Target:
    return cpu_module.Target(printer, runtime_source(), cpu_module.environment("backend/cuda/templates"),
                             extra=(("xp", naming.LIBRARY),))


def context(*args, **kwargs) -> dict:
    return cpu_module.context(*args, target=target(), **kwargs)


def render(values: dict) -> str:
    return cpu_module.render(values, target())
