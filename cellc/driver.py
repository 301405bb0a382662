"""The compiler driver: spec → IR → passes → printer → template → module source.

Stages (each a plain function you can call and inspect on its own):

  1. front end  `spec.read_spec(path)`        file → Cell IR (with Affine terms)
     (regularize `passes.regularize(cell, r)` zoneout / recurrent dropout masks, on request)
  2. split      `passes.split(cell)`          Affine terms → affine nodes
  3. schedule   `passes.schedule(cell)`       static/step programs, fused GEMMs and kernels
  4. derive     `passes.derive(plan)`         symbolic backward (VJP + CSE), saved values
  5. codegen    `codegen.build_context(...)`  storage, printed kernels and drivers
  6. render     `render(context)`             Jinja2 template → Python source

`compile_spec` runs them in order and times each, like FFCx's compiler.
"""
from __future__ import annotations

import os
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import NamedTuple

import jinja2

from . import __version__
from .backend.numba.codegen import build_context
from .ir.cell import Cell, format_equation
from .passes import derive, regularize, schedule, split
from .runtime.regularizers import Regularizers
from .passes.regularize import matmul_states
from .passes.derive import Derivation
from .errors import read_spec_bytes
from .frontend.spec import parse_spec

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("cellc", "backend/numba/templates"),
                          undefined=jinja2.StrictUndefined, trim_blocks=True,
                          lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
_ENV.filters["py"] = repr   # Python literals in the generated module


def docstring_text(text: str) -> str:
    """Free text from a spec (summary, reference, file name) made inert inside a
    docstring or a comment: backslashes and double quotes are escaped and control,
    format and line-separator characters are written as escapes, so the text can
    neither close the docstring nor start a new line of code. `__doc__` still reads
    the original text (escapes are undone by the string literal)."""
    out = []
    for ch in text:
        if ch in '\\"':
            out.append("\\" + ch)
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs"):
            out.append(ch.encode("unicode_escape").decode("ascii") if ord(ch) < 0x10000
                       else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    return "".join(out)


_ENV.filters["text"] = docstring_text


class Compiled(NamedTuple):
    cell: Cell                 # after the split pass
    derivation: Derivation
    source: str                # the generated module
    timings: dict[str, float]  # seconds per stage


def render(context: dict) -> str:
    return _ENV.get_template("module.py.j2").render(**context)


def compile_bytes(raw: bytes, path: str = "<spec>",
                  regularizers: Regularizers = Regularizers()) -> Compiled:
    """Compile spec bytes to module source; `regularizers` asks for the variant with
    zoneout and recurrent dropout masks as inputs (see `passes/regularize.py`)."""
    timings = {}
    t0 = time.perf_counter()

    def lap(stage):
        nonlocal t0
        now = time.perf_counter()
        timings[stage] = now - t0
        t0 = now

    cell = parse_spec(raw, path)
    droppable = matmul_states(cell)
    cell = regularize(cell, regularizers)
    equations = [format_equation(n) for n in cell.nodes]
    lap("frontend")
    cell = split(cell)
    lap("split")
    plan = schedule(cell)
    lap("schedule")
    derivation = derive(plan)
    lap("derive")
    context = build_context(derivation, version=__version__, source_name=Path(path).name,
                            equations=equations, spec_text=raw.decode("utf-8"),
                            matmul_states=droppable)
    lap("codegen")
    source = render(context)
    lap("render")
    return Compiled(cell, derivation, source, timings)


def compile_spec(path: str | Path) -> Compiled:
    """Compile the spec file at `path` to module source (nothing is written)."""
    return compile_bytes(read_spec_bytes(path), str(path))


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
