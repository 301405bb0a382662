"""The generated CUDA module: the same program tree as the CPU module's, printed by the
CUDA printer (`printer.py`), with the CUDA runtime (`runtime.py`, after the CPU runtime's
functions it shares) and its own Jinja2 template; the context is the CPU module's
(`numba/module.py`), so the two modules carry the same metadata."""
from __future__ import annotations

import ast
from pathlib import Path

from ... import naming
from ..numba import module as cpu_module
from . import printer

_RUNTIME = Path(__file__).with_name("runtime.py")
_CPU_RUNTIME = Path(__file__).parent.parent / "numba" / "runtime.py"
_SHARED = "# ---- shared with the CPU target (cellc/backend/numba/runtime.py) ----\n"
# The CPU runtime's definitions every CUDA module carries too, in this order: the size
# rules and checks of arguments, ragged batches' order, parameter initialisation.
SHARED = ("_is_size", "_WIDTH_ONE", "_width", "_bind", "_Named", "_validate", "_batch_order",
          "_last_steps", "_init_params")


def shared_source() -> str:
    """The CPU runtime's `SHARED` definitions, as its file writes them (read as text:
    printing a module imports neither runtime, nor numba.cuda)."""
    text = _CPU_RUNTIME.read_text(encoding="utf-8")
    found = {}
    for node in ast.parse(text).body:
        names = [node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else \
            [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
        for name in names:
            if name in SHARED:
                start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
                found[name] = "\n".join(text.splitlines()[start - 1:node.end_lineno])
    missing = [n for n in SHARED if n not in found]
    assert not missing, f"the CPU runtime has no {missing}"
    return "\n\n\n".join(found[n] for n in SHARED)


def runtime_source() -> str:
    """The CUDA runtime, the CPU runtime's shared definitions placed at its marker."""
    own = cpu_module.runtime_source(_RUNTIME)
    return own.replace(_SHARED, _SHARED + "\n\n" + shared_source() + "\n\n", 1)


def target() -> cpu_module.Target:
    return cpu_module.Target(printer, runtime_source(), cpu_module.environment("backend/cuda/templates"),
                             extra=(("xp", naming.LIBRARY),))


def context(*args, **kwargs) -> dict:
    return cpu_module.context(*args, target=target(), **kwargs)


def render(values: dict) -> str:
    return cpu_module.render(values, target())
