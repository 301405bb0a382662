"""The generated CUDA module: the same program tree as the CPU module's, printed by the
CUDA printer (`printer.py`), with the CUDA runtime (`runtime.py`, after the CPU runtime's
functions it shares) and its own Jinja2 template; the context is the CPU module's
(`numba/module.py`), so the two modules carry the same metadata."""
from __future__ import annotations

import inspect
from pathlib import Path

from ... import naming
from ..numba import module as cpu_module
from ..numba import runtime as cpu_runtime
from . import printer
from . import runtime as cuda_runtime

_RUNTIME = Path(__file__).with_name("runtime.py")
_SHARED = "# ---- shared with the CPU target (cellc/backend/numba/runtime.py) ----\n"


def runtime_source() -> str:
    """The CPU runtime's shared functions (`runtime.SHARED`), then the CUDA runtime."""
    shared = []
    for name in cuda_runtime.SHARED:
        item = getattr(cpu_runtime, name)
        shared.append(inspect.getsource(item).rstrip("\n") if callable(item) else f"{name} = {item!r}")
    own = cpu_module.runtime_source(_RUNTIME)
    return own.replace(_SHARED, _SHARED + "\n\n" + "\n\n\n".join(shared) + "\n\n", 1)


def target() -> cpu_module.Target:
    return cpu_module.Target(printer, runtime_source(), cpu_module.environment("backend/cuda/templates"),
                             extra=(("xp", naming.LIBRARY),))


def context(*args, **kwargs) -> dict:
    return cpu_module.context(*args, target=target(), **kwargs)


def render(values: dict) -> str:
    return cpu_module.render(values, target())
