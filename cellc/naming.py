"""Every name the compiler makes, built and read back in this one place.

A spec's own names (inputs, states, parameters, values, dimensions) are ASCII identifiers
that start with a letter, hold no `__`, are at most `MAX_LENGTH` characters long and are
not `RESERVED`: the front end refuses anything else (`name_problem`). Every name the
compiler makes has the form

    {kind}__{rest}

where `kind` is one of `KINDS` and `rest` is a spec name, another made name, a number, or
nothing (the fixed locals `row__`, `unit__`, ...). The first `__` ends the kind, so a made
name never equals a spec name, two made names of different kinds never meet, and `parse`
reads any made name back without guessing. Names only nest a fixed number of times (an
adjoint of a product of a new state: `d__at__new__h__W`), so with spec names bounded,
made names are bounded too; nothing the compiler names after a function or a file
(kernels, step loops) contains a spec name at all.

The parts of the compiler that need a name call the function for its kind below; the
tools (`show`, `graph`, the docs) read names through `parse` and `display`.
"""
from __future__ import annotations

import ast
import builtins
import keyword
import re
from pathlib import Path
from typing import NamedTuple

MAX_LENGTH = 40          # a spec name's length, at most
SEP = "__"

# ---- kinds: values of the IR -------------------------------------------------------
NEW = "new"            # new__h: the new value of state h (h' in a spec)
AT = "at"              # at__x__W: the product x @ W
IN = "in"              # in__W (in__W__2, ...): the operand of `(...) @ W`, named by split
ARG = "arg"            # arg__3: the argument of a reduction, named by split
SUM = "sum"            # sum__v: the sum of vector v over its units (one number per row)
LEN = "len"            # len__H: the size of dimension H, in an expression
ZONEOUT = "zoneout"    # zoneout__h: the zoneout mask of state h (an input)
DROPOUT = "dropout"    # dropout__h: the recurrent dropout mask of state h (an input)
DROPPED = "dropped"    # dropped__v: v as the matrix products read it under recurrent dropout
UPDATE = "update"      # update__h: the spec's own update of a zoned-out state h
# ---- kinds: the derivation -----------------------------------------------------------
ADJOINT = "d"          # d__v: the gradient of the loss in v
ACC = "acc"            # acc__sum__v, acc__d__s: a running sum over the units of a row
TEMP = "t"             # t__4: a shared subexpression
# ---- kinds: storage and code ---------------------------------------------------------
GEMM = "mm"            # mm__x: the fused GEMM whose operand is x (its output buffer)
WEIGHTS = "w"          # w__x: the fused weights x multiplies; wt__x their transpose
WEIGHTS_T = "wt"
TERMS = "terms"        # terms__b__step1: per-element terms of a vector parameter's gradient
ROW = "row"            # row__v: a row of scratch inside a kernel
BLOCK = "block"        # block__2: a row of scratch a kernel stores a column block through
UPSTREAM = "up"        # up__h: the upstream gradient of final state h
COLSUM = "colsum"      # colsum__0, colsum__b__step1: column sums of a gradient buffer
FORWARD = "fwd"        # fwd__step1: a forward kernel
BACKWARD = "bwd"       # bwd__step1: a backward kernel
INFER = "inf"          # inf__step1: a kernel of the forward that saves nothing
STEPS = "steps"        # steps__forward: a time loop
MATRIX = "mat"         # mat__1: a weight expression, `h @ (W - W.T)` (ir/weights.py)
USER = "user"          # user__range: a spec name the generated code uses for its own (see `code`)
GPU = "gpu"            # gpu__fwd__step1: the CUDA kernel its launcher `_fwd__step1` runs

KINDS = (NEW, AT, IN, ARG, SUM, LEN, ZONEOUT, DROPOUT, DROPPED, UPDATE, ADJOINT, ACC, TEMP,
         GEMM, WEIGHTS, WEIGHTS_T, TERMS, ROW, BLOCK, UPSTREAM, COLSUM, FORWARD, BACKWARD,
         INFER, STEPS, MATRIX, USER, GPU)

# Fixed locals of the generated code (`{kind}__` with nothing after the kind).
ROWS = "rows__"        # a kernel's row count
ROW_INDEX = "r__"      # its row
UNIT = "j__"           # its unit within the row
ACTIVE = "active__"    # sequences still running at each step (longest first)
RUNNING = "n__"        # how many run at step t
ENDING = "m__"         # how many run at step t + 1 (rows m__:n__ end at t)
D_OUTPUTS = "dy__"     # the upstream gradient of the outputs, all steps
D_OUTPUT = "dyt__"     # ... at step t
HAS_D_OUTPUTS = "has_dy__"
WEIGHT_GRAD = "gw__"   # one fused weight gradient, before it is split per parameter
UPSTREAMS = "upstream__"   # the final states' upstream gradients, by state
ORDER = "order__"      # a ragged batch's order, longest first (None: no lengths)
SAVED = "saved__"      # forward's saved arrays, by name, in backward
ENDS = "ends__"        # ... each sequence's last step, and the way back to the caller's order
BACK = "back__"
LANE = "lane__"        # CUDA: a thread's index in its row's block
FLAT = "i__"           # CUDA: a thread's index in the grid
SUMS = "sums__"        # CUDA: the shared buffer of a block's row sums
SCRATCH = "scratch__"  # CUDA: a kernel's rows of scratch in global memory
LIBRARY = "xp"         # CUDA: the call's array library (torch, CuPy, NumPy in the simulator)
REAL = "real"          # inside kernels: the dtype, as a constructor (`real(0.5)`)
# A function's parameters of one group, passed together as a tuple.
GROUPS = {"vectors": "vectors__", "reads": "reads__", "writes": "writes__",
          "buffers": "buffers__", "sequences": "sequences__"}
TIME = "t"             # the step inside time loops (T is the sequence length)
CHUNK = "chunk__"      # the forward that saves nothing runs the steps in chunks of this
FIRST = "t0__"         # many: steps t0__ to t1__ - 1, span__ of them
STOP = "t1__"
SPAN = "span__"


def make(kind: str, *parts: str) -> str:
    assert kind in KINDS, kind
    return SEP.join((kind, *parts))


class Name(NamedTuple):
    """A made name read back: its kind and its parts (spec names or made names)."""

    kind: str
    parts: tuple[str, ...]


def parse(name: str) -> Name | None:
    """The kind and parts of a made name, or None for a spec name. Parts that are made
    names themselves stay whole (`at__new__h__W` is AT of `new__h` and `W`)."""
    if SEP not in name:
        return None
    kind, rest = name.split(SEP, 1)
    if kind not in KINDS:
        return None
    if kind == AT:            # operand (any name) __ weight (a spec name, or mat__k)
        operand, weight = rest.rsplit(SEP, 1)
        if weight.isdigit() and operand.endswith(SEP + MATRIX):
            operand, weight = operand[: -len(SEP + MATRIX)], make(MATRIX, weight)
        return Name(kind, (operand, weight))
    if kind in (IN, TERMS) and SEP in rest:
        return Name(kind, tuple(rest.rsplit(SEP, 1)))
    return Name(kind, (rest,))


def is_made(name: str) -> bool:
    return parse(name) is not None


def kind_of(name: str) -> str | None:
    parsed = parse(name)
    return parsed.kind if parsed else None


# ---- values of the IR ----------------------------------------------------------------
def new(state: str) -> str:
    """The new value of `state` (h' in a spec)."""
    return make(NEW, state)


def state_of(name: str) -> str | None:
    """The state whose new value `name` is, or None."""
    parsed = parse(name)
    return parsed.parts[0] if parsed and parsed.kind == NEW else None


def product(operand: str, weight: str) -> str:
    return make(AT, operand, weight)


def operand(weight: str, k: int = 1) -> str:
    """The k-th operand of `(...) @ weight` that split had to name."""
    return make(IN, weight) if k == 1 else make(IN, weight, str(k))


def reduction_argument(k: int) -> str:
    return make(ARG, str(k))


def reduction(value: str) -> str:
    """The sum of vector `value` over its units."""
    return make(SUM, value)


def size(dim: str) -> str:
    """Dimension `dim`'s number of units, as a symbol in expressions."""
    return make(LEN, dim)


def zoneout_mask(state: str) -> str:
    return make(ZONEOUT, state)


def dropout_mask(state: str) -> str:
    return make(DROPOUT, state)


def dropped(value: str) -> str:
    return make(DROPPED, value)


def update(state: str) -> str:
    return make(UPDATE, state)


def weight_expression(k: int) -> str:
    """The k-th weight expression of a spec, as a weight: `mat__1`."""
    return make(MATRIX, str(k))


# ---- the derivation ------------------------------------------------------------------
def adjoint(name: str) -> str:
    return make(ADJOINT, name)


def accumulator(name: str) -> str:
    """A running sum over the units of a row: of a reduction in forward
    (`acc__sum__v`), of what the units send to a per-row scalar in backward
    (`acc__d__s`)."""
    return make(ACC, name)


def temporary(k: int) -> str:
    return make(TEMP, str(k))


def held_adjoint(k: int) -> str:
    """`t__d__3`: a temporary that derive binds an adjoint to; renumbered as a plain
    temporary before the derivation leaves the pass."""
    return make(TEMP, ADJOINT, str(k))


TEMP_PREFIX = TEMP + SEP     # for sympy.numbered_symbols


# ---- storage and code ----------------------------------------------------------------
def array(name: str) -> str:
    """The array holding value `name` (or a buffer) in the generated code."""
    return "_" + code(name)


def code(name: str) -> str:
    """How the generated code spells a name: a spec name the module also uses for its own
    (`T`, `range`, `np`, `real`, `empty` beside the runtime's `_empty`) as `user__T`,
    every other name as it is. So every name is free in a spec, and the kernels still
    read `h`, `W_xi` and `c` as the paper writes them."""
    return make(USER, name) if name in code_names() else name


def gemm(operand_name: str) -> str:
    return make(GEMM, operand_name)


def weights(operand_name: str) -> str:
    return make(WEIGHTS, operand_name)


def weights_transposed(operand_name: str) -> str:
    return make(WEIGHTS_T, operand_name)


def terms(param: str, region: str) -> str:
    return make(TERMS, param, region)


def term_sums(param: str, region: str) -> str:
    """The running column sums of a step region's terms (`colsum__b__step1`)."""
    return make(COLSUM, param, region)


def scratch_row(name: str) -> str:
    return make(ROW, name)


def block(k: int) -> str:
    return make(BLOCK, str(k))


def upstream(state: str) -> str:
    return make(UPSTREAM, state)


def column_sums(k: int) -> str:
    return make(COLSUM, str(k))


def region(program: str, stage: int, k: int) -> str:
    """The name of the k-th fused elementwise region of a program's stage: `step1`,
    and `step1b`, `step1c` when a stage has regions of several widths."""
    return f"{program}{stage}" + ("" if k == 0 else chr(ord("a") + k))


def kernel(direction: str, region_name: str) -> str:
    """A fused kernel's function name: direction is FORWARD or BACKWARD."""
    return "_" + make(direction, region_name)


def device_kernel(launcher: str) -> str:
    """The CUDA kernel behind a kernel's launcher: `_gpu__fwd__step1`."""
    return "_" + make(GPU, launcher.lstrip("_"))


def steps(direction: str) -> str:
    """A time loop's function name: `_steps__fwd`, `_steps__bwd`, `_steps__inf`."""
    return "_" + make(STEPS, direction)


# ---- how a name reads in a formula ---------------------------------------------------
_SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def display(name: str) -> str:
    """How a name reads in `cellc show`, the docs and the drawings (Unicode)."""
    parsed = parse(name)
    if parsed is None:
        return name
    kind, parts = parsed
    inner = [display(p) for p in parts]
    return {
        NEW: lambda: inner[0] + "′",
        AT: lambda: f"{inner[0]}·{display(parts[1])}",
        IN: lambda: f"in[{parts[0]}]" + (parts[1].translate(_SUB) if len(parts) > 1 else ""),
        ARG: lambda: "ρ" + parts[0].translate(_SUB),
        SUM: lambda: "Σ" + inner[0],
        LEN: lambda: f"|{parts[0]}|",
        ADJOINT: lambda: "∂" + inner[0],
        ACC: lambda: "Σ" + inner[0],
        TEMP: lambda: "t" + parts[0].translate(_SUB),
        MATRIX: lambda: "M" + parts[0].translate(_SUB),
    }.get(kind, lambda: f"{kind}[{inner[0]}]")()


def display_spec(name: str) -> str:
    """How a user writes an IR name in a spec: `new__h` is `h'`."""
    state = state_of(name)
    return state + "'" if state is not None else name


_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "kappa",
          "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "phi", "chi", "psi", "omega"}


def latex(name: str) -> str:
    """How a name reads in LaTeX."""
    parsed = parse(name)
    if parsed is None:
        head, _, sub = name.partition("_")
        head = rf"\{head}" if head in _GREEK else head
        return f"{head}_{{{sub}}}" if sub else head
    kind, parts = parsed
    inner = [latex(p) for p in parts]
    return {
        NEW: lambda: inner[0] + "'",
        AT: lambda: f"{inner[0]} {inner[1]}",
        IN: lambda: rf"\mathrm{{in}}_{{{inner[0]}}}",
        ARG: lambda: rf"\rho_{{{parts[0]}}}",
        SUM: lambda: r"\Sigma " + inner[0],
        LEN: lambda: f"|{parts[0]}|",
        ADJOINT: lambda: r"\partial " + inner[0],
        ACC: lambda: r"\textstyle\sum_j " + inner[0],
        TEMP: lambda: f"t_{{{parts[0]}}}",
        MATRIX: lambda: f"M_{{{parts[0]}}}",
    }.get(kind, lambda: rf"\mathrm{{{kind}}}[{inner[0]}]")()


def spec_text(text: str) -> str:
    """`h'` in an equation as written, read as the IR's `new__h`."""
    return re.sub(r"([A-Za-z_][A-Za-z0-9_]*)'", lambda m: new(m.group(1)), text)


def spec_form(text: str) -> str:
    """The IR's `new__h` in printed text, written back as a user writes it: `h'`."""
    return re.sub(rf"\b{NEW}{SEP}([A-Za-z][A-Za-z0-9_]*)\b", r"\1'", text)


# ---- names a spec may not use ----------------------------------------------------------
_RUNTIME = Path(__file__).parent / "backend" / "numba" / "runtime.py"


def _runtime_names() -> set[str]:
    """The names the generated modules' runtime defines or imports at its top level
    (a spec value `v` lives in an array `_v`, so neither `empty` nor `_empty` may name
    one). Read from the runtime's own source, so a new helper is covered the day it is
    written."""
    names = set()
    for stmt in ast.parse(_RUNTIME.read_text(encoding="utf-8")).body:
        if isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
            names.add(stmt.name)
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            for target in (stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]):
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in stmt.names)
    return {n.lstrip("_") for n in names}


# The generated module's own top-level names and the drivers' bare locals.
MODULE_NAMES = {"NAME", "CELLC_VERSION", "SPEC_SHA256", "INPUTS", "STATES", "OUTPUT",
                "OUTPUT_DIM", "PARAMS", "INIT", "DIMS", "HIDDEN", "TORCH", "NO_GRAD_INPUTS",
                "BACKWARD_PARAMS", "REGULARIZERS", "MATMUL_STATES", "BIASES", "SPEC_SOURCE",
                "init_params", "forward",
                "backward", "clear_workspace", "forward_without_grad", "CONTRACT", "params",
                "inputs", "states", "sizes", "dtype", "cache", "grads", "lengths", "d_outputs",
                "d_states", "need_grad", "seed",
                "saved", "final", "outputs", "T", "B", TIME, REAL}


_CODE_NAMES: frozenset[str] | None = None
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")       # the drivers' names, read from their template
_NOT_CODE = re.compile(r'"""[\s\S]*?"""|\{\{[\s\S]*?\}\}|\{%[\s\S]*?%\}|#[^\n]*|"[^"\n]*"|\'[^\'\n]*\'')
# Modules a cell's file name must not shadow, beside the standard library's
_IMPORTED = {"numpy", "numba", "llvmlite", "cellc", "generated", "torch", "jax", "sympy",
             "jinja2", "pytest", "hypothesis"}


def code_names() -> frozenset[str]:
    """Every bare name the generated module uses or may meet: Python's builtins, the
    module's own names, every word of the drivers' template (their locals among them),
    and the runtime's top level (without its leading `_`: a value `v` lives in an array
    `_v`). Read from the sources, so a new helper or local is covered the day it is
    written."""
    global _CODE_NAMES
    if _CODE_NAMES is None:
        template = (_RUNTIME.parent / "templates" / "module.py.j2").read_text(encoding="utf-8")
        code_only = _NOT_CODE.sub(" ", template)
        _CODE_NAMES = frozenset(set(dir(builtins)) | set(keyword.softkwlist) | MODULE_NAMES
                                | _runtime_names() | set(_WORD.findall(code_only)))
    return _CODE_NAMES


def reserved() -> frozenset[str]:
    """The names a spec may not use: Python's keywords (an equation is read as Python)
    and the language's own functions. Every other name is free (see `code`)."""
    from .frontend.expressions import REDUCTIONS
    from .ir.functions import CALLABLE  # the functions a spec may call
    return frozenset(set(keyword.kwlist) | set(CALLABLE) | set(REDUCTIONS) | {"eye"})


def cell_name_problem(name: str) -> str | None:
    """Why `name` cannot name a cell, or None: a cell's name is also its module's file
    name, which must not shadow a module Python would import instead."""
    import sys
    if name in sys.stdlib_module_names or name in _IMPORTED or name in builtins.__dict__:
        return "is the name of a Python module or builtin, which the cell's module file would shadow"
    return None


_IDENT = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")


def name_problem(name: str, reserved_names: frozenset[str]) -> str | None:
    """Why `name` cannot name a value, dimension or cell, or None if it can."""
    if not _IDENT.match(name):
        return "is not a valid name (ASCII letters, digits and _, starting with a letter)"
    if len(name) > MAX_LENGTH:
        return f"is {len(name)} characters long; names have at most {MAX_LENGTH}"
    if SEP in name:
        return "contains `__`, which cellc reserves for its own names"
    if name in reserved_names:
        return "is reserved: a Python keyword or one of the language's functions"
    return None
