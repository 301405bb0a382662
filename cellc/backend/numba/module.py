"""The generated module: the program tree printed (`printer.py`), the runtime placed
verbatim (`runtime.py`), and the Jinja2 template that lays them out.

The template holds layout, not logic: everything it places is printed here first, and
`context` checks that its keys are exactly the template's placeholders (as FFCx's
Numba back end does), so template and code cannot drift apart.

Nothing from a spec reaches a module's first two lines, where Python reads an encoding
declaration (PEP 263: a file name `a coding=unicode_escape b.toml` there would make Python
decode the module so that escaped quotes in its docstring end it); the rest of the spec's
free text is escaped (`docstring_text`), its names are identifiers and its numbers printed.
"""
from __future__ import annotations

import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import jinja2
import jinja2.meta
import sympy

from ... import naming
from ...ir.cell import ONE, Cell
from ...runtime.regularizers import Regularizers
from .. import tree
from ..storage import T, size
from . import printer

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("cellc", "backend/numba/templates"),
                          undefined=jinja2.StrictUndefined, trim_blocks=True,
                          lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
_ENV.filters["py"] = repr   # Python literals in the generated module
_ENV.filters["code"] = naming.code     # a spec name as the generated code spells it
_TEMPLATE = "module.py.j2"
_RUNTIME = Path(__file__).with_name("runtime.py")
_MARKER = "# ---- placed verbatim in every generated module from here on ----\n"


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


_SHARED_RUNTIME = Path(__file__).parent.parent / "shared_runtime.py"
_SHARED = "# ---- shared by the CPU and CUDA targets (cellc/backend/shared_runtime.py) ----"


def _placed(path: Path) -> str:
    """A runtime file's code, from its marker line on."""
    text = path.read_text(encoding="utf-8")
    return text[text.index(_MARKER) + len(_MARKER):].rstrip("\n")


def runtime_source(path: Path = _RUNTIME) -> str:
    """A target's runtime as its modules carry it: its code from its marker line on, the
    code both targets share (`shared_runtime.py`) after its line that says so."""
    own = _placed(path)
    assert _SHARED in own, f"{path.name} has no line for the shared runtime"
    return own.replace(_SHARED, _SHARED + "\n" + _placed(_SHARED_RUNTIME) + "\n", 1).rstrip("\n")


def environment(templates: str) -> jinja2.Environment:
    """The Jinja2 environment of a target's templates (a folder of the cellc package),
    with the filters every template uses."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("cellc", templates),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    env.filters.update(_ENV.filters)
    return env


class Target(NamedTuple):
    """What a target prints a program with: its printer (`function`, `statements`,
    `view`), its runtime's code, and its module template."""

    printer: object
    runtime: str
    env: jinja2.Environment
    template: str = _TEMPLATE
    extra: tuple = ()             # (placeholder, value) the target's template adds


@lru_cache(maxsize=1)
def numba_target() -> Target:
    return Target(printer, runtime_source(), _ENV)


def placeholders(target: Target | None = None) -> set[str]:
    target = target or numba_target()
    source = target.env.loader.get_source(target.env, target.template)[0]
    return jinja2.meta.find_undeclared_variables(target.env.parse(source))


def _finals(finals, ragged: bool, printer=printer) -> list:
    """(state, its last value) as printed: `_h[T]`, or with lengths `_h[ends__, back__]`;
    a state kept in two alternating buffers: `_c[T % 2]` (`[back__]` with lengths)."""
    out = []
    for state, array in finals:
        alternating = array.shape[0] == 2
        last = tree.View(array, step=sympy.Mod(T, 2) if alternating else T)
        text = printer.view(last)
        if ragged:
            text = (f"{text}[{naming.BACK}]" if alternating
                    else f"{array.name}[{naming.ENDS}, {naming.BACK}]")
        out.append((state, text))
    return out


def _output(v: tree.View, printer=printer) -> str:
    text = printer.view(v)
    return f"_contiguous({text})" if v.cols is not None else text


def context(cell: Cell, program: tree.Program, *, version: str, source_name: str,
            spec_lines: list, equations: list, matmul_states: tuple,
            biases: tuple = (), target: Target | None = None) -> dict:
    """The template's values; `cell` is the split IR, `spec_lines` the spec's text line by
    line, `equations` the step as the spec writes it; `target` the printer, runtime and
    template (Numba's by default)."""
    target = target or numba_target()
    printer = target.printer
    regularizers = cell.regularizers or Regularizers()
    scalars = {p.name for p in cell.params if p.shape == (ONE,)}    # 0-d arrays to the user
    out = cell.dim_of()[cell.output]
    in_loops = {s.function for f in program.functions if f.kind == "steps"
                for s in tree.walk(f.body) if isinstance(s, tree.Call)}
    loops = tuple(f.name for f in program.functions if f.kind == "steps")
    statements = printer.Statements(loops)
    values = {
        "version": version,
        "source_name": source_name,
        "spec_hash": cell.spec_hash[:16],
        "spec_sha256": cell.spec_hash,
        "name": cell.name,
        "summary": cell.summary or "a recurrent cell compiled by cellc",
        "reference": cell.reference,
        "zoneout": regularizers.zoneout,
        "recurrent_dropout": regularizers.recurrent_dropout,
        "first_state": cell.states[0].name,
        "equations": equations,
        "runtime": target.runtime,
        "inputs": {v.name: v.dim for v in cell.inputs},
        "states": {v.name: v.dim for v in cell.states},
        "output_name": naming.display_spec(cell.output),
        "output_dim": out,
        "output_width": printer.index(size(out)),
        "input_dim": cell.inputs[0].dim,
        "params": [(p.name, () if p.shape == (ONE,) else p.shape) for p in cell.params
                   if p.derived is None],
        "inits": [(p.name, (p.init.kind, p.init.args)) for p in cell.params
                  if p.init.kind != "default" and p.derived is None],
        "dims": tuple(cell.dims),
        "hidden": tuple(dict.fromkeys(v.dim for v in cell.states if v.dim != ONE)),
        "torch": cell.torch.as_dict() if cell.torch else None,
        "no_grad_inputs": tuple(v.name for v in cell.inputs if not v.grad),
        "matmul_states": matmul_states,
        "biases": biases,
        "spec_lines": spec_lines,
        "functions": [printer.function(f, inlined=f.name in in_loops, loops=loops)
                      for f in program.functions],
        "forward": statements(program.forward),
        "infer": statements(program.infer),
        "backward": statements(program.backward),
        "saved": [(a.name, printer.shape(a.shape)) for a in program.saved],
        "backward_params": tuple(s.key for s in program.backward
                                 if isinstance(s, tree.Argument) and s.source == "params"),
        "output": _output(program.output, printer),
        "infer_output": _output(program.infer_output, printer),
        "finals": _finals(program.final_states, False, printer),
        "ragged_finals": _finals(program.final_states, True, printer),
        "infer_finals": _finals(program.infer_final_states, False, printer),
        "infer_ragged_finals": _finals(program.infer_final_states, True, printer),
        "grad_params": [(k, f"{a}.reshape(())" if k in scalars else a)
                        for k, a in program.gradients[0]],
        "grad_inputs": list(program.gradients[1]),
        "grad_states": list(program.gradients[2]),
        "order": naming.ORDER,
        "ends": naming.ENDS,
        "saved_dict": naming.SAVED,
        "back": naming.BACK,
        "active": naming.ACTIVE,
        "d_outputs": naming.D_OUTPUTS,
        "has_d_outputs": naming.HAS_D_OUTPUTS,
        "upstream": naming.UPSTREAMS,
    }
    values.update(target.extra)
    wanted = placeholders(target)
    missing, extra = wanted - set(values), set(values) - wanted
    assert not missing and not extra, f"template and context differ: {missing} {extra}"
    return values


def render(values: dict, target: Target | None = None) -> str:
    target = target or numba_target()
    return target.env.get_template(target.template).render(**values)
