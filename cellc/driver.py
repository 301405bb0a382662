"""The compiler driver: spec → IR → passes → program tree → printed module.

Stages (each a plain function you can call and inspect on its own), with the IR each one
returns; `compile_bytes` runs them in order, times each (like FFCx's compiler) and returns
every intermediate (like Devito's `IRs`), so a tool can show any stage without
compiling twice:

  1. front end   `frontend.spec.parse_spec`   bytes → Cell, with Affine terms   (ir/cell.py)
  2. regularize  `passes.regularize`          zoneout / recurrent dropout masks, on request
  3. split       `passes.split`               Affine terms → affine nodes       (ir/cell.py)
  4. schedule    `passes.schedule`            static/step stages, fused GEMMs
                                              and kernels                       (ir/plan.py)
  5. derive      `passes.derive`              symbolic backward (VJP + CSE),
                                              what forward saves                (ir/derivation.py)
  6. lower       `backend.program.lower`      program tree: kernels, time loops,
                                              drivers                           (backend/tree.py)
  7. print       `backend.numba.module`       the tree printed for Numba (or, with
                 `backend.cuda.module`        target="cuda", for numba.cuda), laid
                                              out by a Jinja2 template          (Python source)

The Cell IR is type-checked after every pass that rewrites it (`ir.cell.typecheck`), the
plan when it is made (`ir.plan.typecheck_plan`).
"""
from __future__ import annotations

import importlib.util
import os
import py_compile
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from . import __version__
from .backend.numba import module
from .backend.program import lower
from .backend.tree import Program
from .errors import read_spec_bytes
from .frontend.spec import parse_spec
from .ir.cell import Cell, biases, format_equation
from .ir.derivation import Derivation
from .ir.plan import Plan
from .passes import derive, regularize, schedule, split
from .passes.regularize import matmul_states
from .runtime.regularizers import Regularizers


class IRs(NamedTuple):
    """Every intermediate of one compile, in pipeline order."""

    spec: Cell                 # the front end's, as the spec writes it
    variant: Cell              # with the regularizers' masks (the spec's own when none)
    cell: Cell                 # after split: what the interpreter and the back end read
    plan: Plan
    derivation: Derivation
    program: Program
    source: str                # the generated module
    timings: dict              # seconds per stage


TARGETS = ("cpu", "cuda")


def compile_bytes(raw: bytes, path: str = "<spec>",
                  regularizers: Regularizers = Regularizers(), target: str = "cpu") -> IRs:
    """Compile spec bytes to module source; `regularizers` asks for the variant with
    zoneout and recurrent dropout masks as inputs (see `passes/regularize.py`); `target`
    is "cpu" (Numba) or "cuda" (numba.cuda). `path` is used in messages only."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; cellc compiles for {' or '.join(TARGETS)}")
    if target == "cuda":
        from .backend.cuda import module as printing
    else:
        printing = module
    timings = {}
    t0 = time.perf_counter()

    def lap(stage):
        nonlocal t0
        now = time.perf_counter()
        timings[stage] = now - t0
        t0 = now

    spec = parse_spec(raw, path)
    lap("frontend")
    variant = regularize(spec, regularizers)
    lap("regularize")
    cell = split(variant)
    lap("split")
    plan = schedule(cell)
    lap("schedule")
    derivation = derive(plan)
    lap("derive")
    program = lower(derivation)
    lap("lower")
    values = printing.context(cell, program, version=__version__,
                            source_name=Path(path).name,
                            spec_lines=raw.decode("utf-8").split("\n"),
                            equations=[format_equation(n) for n in variant.nodes],
                            matmul_states=matmul_states(spec), biases=biases(spec))
    source = printing.render(values)
    lap("print")
    return IRs(spec, variant, cell, plan, derivation, program, source, timings)


def compile_spec(path: str | Path, target: str = "cpu") -> IRs:
    """Compile the spec file at `path` to module source for `target` (nothing is written)."""
    return compile_bytes(read_spec_bytes(path), str(path), target=target)


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_module(path: Path, text: str) -> None:
    """Write a generated module so that Python and Numba can never serve an older one.

    Python trusts a `.pyc` whose source has the same size and whole-second mtime, so a
    same-size edit written within a second of the last import would run the old code:
    the old bytecode and Numba's cache files for the module go, and the new bytecode is
    checked against the source's hash at every import (PEP 552), whoever rewrites it."""
    write_atomic(path, text)
    cache = path.parent / "__pycache__"
    for old in [*cache.glob(f"{path.stem}.*.pyc"), *cache.glob(f"{path.stem}.*.nbi"),
                *cache.glob(f"{path.stem}.*.nbc")]:
        old.unlink(missing_ok=True)
    py_compile.compile(str(path), cfile=importlib.util.cache_from_source(str(path)),
                       doraise=True, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)


def stale_files(outdir: Path, expected: dict[str, str], pattern: str) -> list[str]:
    """What in `outdir` differs from `expected` ({file name: text}): missing or stale files,
    and files matching `pattern` that nothing generates."""
    found = []
    for name, text in expected.items():
        path = outdir / name
        if not path.exists():
            found.append(f"{path} is missing")
        elif path.read_text(encoding="utf-8") != text:
            found.append(f"{path} is stale")
    found += [f"{path} has no spec" for path in sorted(outdir.glob(pattern))
              if path.name not in expected]
    return found
