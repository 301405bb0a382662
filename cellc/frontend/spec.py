"""Front end: a spec file (TOML data, never executed) → the cell IR.

A spec is read with `tomllib`; its `equations` string is parsed with Python's `ast`
module and converted to SymPy through a whitelist of node types, so nothing in a spec
is ever evaluated. Shapes are inferred by unification (see `dims.py`). Every problem is
reported as a `SpecError` naming the file, line, column, symbol and a fix.

The result still holds `Affine(e, W)` terms inside expressions; the `split` pass lifts
them into affine nodes.
"""
from __future__ import annotations

import ast
import hashlib
import re
import tomllib
import warnings
from pathlib import Path

from .. import naming
from ..errors import MAX_SPEC_BYTES, SpecError, did_you_mean, read_spec_bytes
from ..ir.cell import CONSTANTS_RULE, ONE, Cell, Init, Node, Param, Var, live_names, representable, typecheck
from ..ir.weights import sources
from .dims import Dims
from .expressions import MAX_DEPTH, ExpressionConverter
from .stabilize import stabilize
from .torchmap import parse_torch_table

# A bound on the work a spec can ask for: derive and Numba's compile grow with the cell's
# size, so every spec compiles in bounded time (README, "Bounded work", has the figures).
# About 5x the largest shipped cell (ln_lstm: 21 equations, 243 terms).
MAX_EQUATIONS = 100
MAX_TERMS = 1200        # expression nodes: names, numbers, operations, calls
FIELDS = {"name": str, "summary": str, "reference": str, "inputs": (list, dict),
          "states": (list, dict), "parameters": list, "equations": str, "output": str,
          "shapes": dict, "init": dict, "torch": dict}
REQUIRED = ("name", "inputs", "states", "parameters", "equations")
INIT_KINDS = {"default": 0, "zeros": 0, "ones": 0, "orthogonal": 0, "uniform": 2, "normal": 2}


RESERVED = naming.reserved()
# two operands side by side: a name, number or `)` then a name, number or `(`
_JUXTAPOSED = re.compile(r"([A-Za-z_][\w']*|\d[\d.]*|\))\s+(?!(?:if|else|and|or|not|in|is|for)\b)"
                         r"([A-Za-z_][\w']*|\d[\d.]*|\()")
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_INIT = re.compile(rf"\s*([a-z]+)\s*(?:\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\))?\s*\Z")


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a value, dimension or cell, or None if it can."""
    return naming.name_problem(name, RESERVED)


def read_spec(path: str | Path) -> Cell:
    """Parse and check the spec file at `path`; return its IR (before passes)."""
    return parse_spec(read_spec_bytes(path), str(path))


def parse_spec(raw: bytes, path: str = "<spec>") -> Cell:
    """Parse spec bytes; `path` is used in messages only."""
    return _Frontend(raw, path).cell()


class _Frontend(ExpressionConverter):
    def __init__(self, raw: bytes, path: str):
        self.path = path
        if len(raw) > MAX_SPEC_BYTES:
            self.fail(f"spec is larger than the limit of {MAX_SPEC_BYTES} bytes",
                      fix="a cell spec is a few dozen lines; check that this is the right file")
        try:
            self.text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            line = raw[: err.start].count(b"\n") + 1
            self.fail(f"spec is not valid UTF-8 (byte {err.start})", line=line,
                      fix="save the file as UTF-8")
        if not self.text.strip():
            self.fail("spec is empty", fix="start from `cellc new NAME`, or see README.md")
        try:
            self.data = tomllib.loads(self.text)
        except RecursionError:
            self.fail("not valid TOML: arrays or tables nested too deeply",
                      fix="a spec's values are strings, lists of names and flat tables")
        except (tomllib.TOMLDecodeError, ValueError) as err:   # ValueError: a huge integer
            m = re.search(r"\(at line (\d+), column (\d+)\)", str(err))
            line, col = (int(m.group(1)), int(m.group(2))) if m else (None, None)
            if m is None and (long := re.search(r"\d{1000,}", self.text)):
                line = self.text.count("\n", 0, long.start()) + 1
            msg = re.sub(r"\s*\(at line.*\)", "", str(err)).split(";")[0]
            self.fail(f"not valid TOML: {msg}", line=line, col=col,
                      fix="a spec is TOML: `key = \"value\"`, lists in [...], "
                          "equations in a \"\"\"...\"\"\" string")
        self.lines = self.text.splitlines()
        self.dims = Dims()

    # ---- reporting -------------------------------------------------------------
    def fail(self, message, *, line=None, col=None, symbol=None, fix=None):
        source = None
        if line is not None and getattr(self, "lines", None) and 0 < line <= len(self.lines):
            source = self.lines[line - 1]
        raise SpecError(message, path=self.path, line=line, col=col, symbol=symbol, fix=fix,
                        source_line=source)

    def key_line(self, key: str) -> int | None:
        pattern = re.compile(rf"\s*(?:{re.escape(key)}\s*=|\[\s*{re.escape(key)}\s*\])")
        for i, text in enumerate(self.lines, 1):
            if pattern.match(text):
                return i
        return None

    def col_of(self, line: int | None, name: str) -> int | None:
        if line is None or not 0 < line <= len(self.lines):
            return None
        m = re.search(rf"(?<![A-Za-z0-9_]){re.escape(naming.display_spec(name))}(?![A-Za-z0-9_])",
                      self.lines[line - 1])
        return m.start() + 1 if m else None

    # ---- fields ----------------------------------------------------------------
    def field(self, key, default=None):
        value = self.data.get(key, default)
        expected = FIELDS[key]
        if value is not None and not isinstance(value, expected):
            kinds = expected if isinstance(expected, tuple) else (expected,)
            names = " or ".join({str: "a string", list: "a list", dict: "a table"}[k]
                                for k in kinds)
            self.fail(f"`{key}` must be {names}, not {type(value).__name__}",
                      line=self.key_line(key), symbol=key, fix=f"see README.md for `{key}`")
        return value

    def check_fields(self):
        for key in self.data:
            if key not in FIELDS:
                self.fail(f"unknown field `{key}`.{did_you_mean(key, FIELDS)}",
                          line=self.key_line(key), symbol=key,
                          fix="known fields: " + ", ".join(FIELDS))
        for key in REQUIRED:
            if key not in self.data:
                self.fail(f"missing field `{key}`", symbol=key,
                          fix=f"add `{key} = ...` (see README.md)")

    def identifier(self, name, what: str, key: str) -> str:
        line = self.key_line(key)
        if not isinstance(name, str):
            self.fail(f"{what} must be a string name, not {type(name).__name__}", line=line,
                      fix='write each name as a TOML string, e.g. "h" or "H"')
        problem = name_problem(name)
        if problem:
            shown = repr(name) if len(name) <= 60 else repr(name[:40]) + "..."
            self.fail(f"{what} {shown} {problem}", line=line, symbol=name,
                      fix="rename it, e.g. `h`, `W_xi`, `b_f`")
        return name

    def vars(self, key: str, default_dim: str) -> tuple[Var, ...]:
        value = self.field(key)
        items = list(value.items()) if isinstance(value, dict) else [(n, default_dim) for n in value]
        if not items:
            self.fail(f"`{key}` is empty", line=self.key_line(key),
                      fix=f"declare at least one, e.g. {key} = [\"{default_dim.lower()}\"]")
        return tuple(Var(self.identifier(n, key[:-1], key), self.dimension(d, key))
                     for n, d in items)

    def dimension(self, name, key: str) -> str:
        """A dimension's name, or "1": a width of one (a time stamp per row, `x @ w` with
        w of shape [I, 1]), which broadcasts against any vector as a reduction's result does."""
        return ONE if name in (ONE, 1) and not isinstance(name, bool) else \
            self.identifier(name, "dimension", key)

    # ---- the cell --------------------------------------------------------------
    def cell(self) -> Cell:
        self.check_fields()
        name = self.identifier(self.field("name"), "cell name", "name")
        if naming.cell_name_problem(name):
            self.fail(f"cell name {name!r} {naming.cell_name_problem(name)}",
                      line=self.key_line("name"), symbol=name, fix=f"e.g. `{name}_cell`")
        self.inputs = self.vars("inputs", "I")
        self.states = self.vars("states", "H")
        self.param_names = [self.identifier(p, "parameter", "parameters")
                            for p in self.field("parameters")]
        declared = {}
        for key, names in (("inputs", [v.name for v in self.inputs]),
                           ("states", [v.name for v in self.states]),
                           ("parameters", self.param_names)):
            for n in names:
                if n in declared:
                    self.fail(f"`{n}` is declared twice (also in `{declared[n]}`)",
                              line=self.key_line(key), col=self.col_of(self.key_line(key), n),
                              symbol=n, fix="give each input, state and parameter its own name")
                declared[n] = key
        self.var_dim = {v.name: self.dims.named(v.dim) for v in self.inputs + self.states}
        self.param_kind: dict[str, tuple] = {}      # name -> ("vector", d) | ("matrix", a, b)
        self.dim_names = {v.dim for v in self.inputs + self.states} - {ONE}
        self.derived: dict[str, object] = {}    # weight expressions, by made name
        self.derived_by_expr: dict[object, str] = {}
        self.declare_shapes()
        for n in sorted(set(declared) & self.dim_names):
            self.fail(f"`{n}` names both a dimension and a value", line=self.key_line(declared[n]),
                      symbol=n, fix="use upper-case names for dimensions, e.g. H")
        equations = self.parse_equations()
        nodes = self.convert(equations)
        nodes = self.topological(nodes)
        output = self.output(nodes)
        self.check_used(nodes, output)
        nodes = stabilize(nodes, [naming.new(s.name) for s in self.states] + [output])
        params = self.resolve_params()
        nodes = tuple(n._replace(dim=self.resolve(self.node_dim[n.name], n.name, n.line))
                      for n in nodes)
        torch = self.field("torch")
        if torch is not None:
            ranks = {p.name: len(p.shape) for p in params if p.derived is None}
            torch = parse_torch_table(torch, ranks, self.fail, self.key_line)
        return typecheck(Cell(name=name, summary=self.field("summary", ""),
                    reference=self.field("reference", ""), inputs=self.inputs,
                    states=self.states, params=params, nodes=nodes, output=output,
                    path=self.path, spec_hash=hashlib.sha256(self.text.encode()).hexdigest(),
                    torch=torch, constants=tuple((n, v) for n, (v, _) in self.constants.items())))

    def declare_shapes(self):
        line = self.key_line("shapes")
        for pname, shape in self.field("shapes", {}).items():
            if pname not in self.param_names:
                self.fail(f"[shapes] names `{pname}`, which is not a parameter."
                          f"{did_you_mean(pname, self.param_names)}", line=line, symbol=pname,
                          fix="list it in `parameters` or remove it from [shapes]")
            if not isinstance(shape, list) or len(shape) > 2:
                self.fail(f"shape of `{pname}` must be a list of at most two dimension names",
                          line=line, symbol=pname,
                          fix=f'e.g. {pname} = ["H", "Q"], or {pname} = [] for a scalar')
            names = [self.dimension(d, "shapes") for d in shape] or [ONE]     # []: a scalar
            dvars = [self.dims.named(d) for d in names]
            self.dim_names.update(n for n in names if n != ONE)
            self.param_kind[pname] = ("vector" if len(dvars) == 1 else "matrix", *dvars)

    def parse_equations(self) -> list[tuple[str, ast.expr, int, str]]:
        text = self.field("equations")
        key_line = self.key_line("equations") or 1
        opener = self.lines[key_line - 1].split("=", 1)[1].strip() if key_line <= len(self.lines) else ""
        first = key_line + 1 if opener in ('"""', "'''") else key_line
        depth = 0
        for ch in text:   # bound nesting before ast sees it
            depth += ch in "([{"
            depth -= ch in ")]}"
            if depth > MAX_DEPTH:
                self.fail(f"equations are nested more than {MAX_DEPTH} parentheses deep",
                          line=key_line, fix="split the expression into named intermediate equations")
        equations, size = [], 0
        for offset, raw_line in enumerate(text.split("\n")):
            line = first + offset
            code = raw_line.split("#", 1)[0]
            if not code.strip():
                continue
            foreign = next((k for k, ch in enumerate(code) if not ch.isascii()), None)
            if foreign is not None:      # Python would read fullwidth `ｈ` as `h` (NFKC)
                ch = code[foreign]
                self.fail(f"non-ASCII character {ch!r} (U+{ord(ch):04X}) in an equation",
                          line=line, col=foreign + 1, symbol=ch,
                          fix="write names and operators in ASCII; comments may use any text")
            stray = re.search(r"[^A-Za-z0-9_\s+\-*/%@()<>=!.,'\[\]^]", code)
            if stray:                   # `h~`, `x$`: not a character of the language
                ch, at = stray.group(), stray.start()
                named = at > 0 and (code[at - 1].isalnum() or code[at - 1] == "_")
                self.fail(f"`{ch}` is not part of the language"
                          + (" and cannot be part of a name" if named else ""), line=line,
                          col=at + 1, symbol=ch,
                          fix="names are ASCII letters, digits and _, starting with a letter "
                              "(write h~ as h_tilde)" if named else
                              "equations use names, numbers, + - * / % // ** @, comparisons "
                              "and parentheses")
            if naming.SEP in code:
                self.fail("`__` in an equation: cellc reserves names with `__` for its own",
                          line=line, col=code.index(naming.SEP) + 1, symbol=naming.SEP,
                          fix="rename the value without a double underscore")
            prepared = naming.spec_text(code.strip())
            try:
                with warnings.catch_warnings():     # e.g. `1if h`: not ours to print
                    warnings.simplefilter("ignore", SyntaxWarning)
                    tree = ast.parse(prepared, mode="exec")
            except SyntaxError as err:
                start = code.find("=") + 1
                side = _JUXTAPOSED.search(code, start)
                if side:                # `x W`, as papers write a product
                    a, b = side.group(1), side.group(2)
                    fix = ("join them with an operator: `@` for a matrix product, `*` "
                           "elementwise" if ")" in a or "(" in b else
                           f"write the product: `{a} @ {b}` for a matrix product, "
                           f"`{a} * {b}` elementwise")
                    self.fail(f"cannot parse equation: `{a} {b}` puts two values side by side",
                              line=line, col=side.start() + 1, fix=fix)
                self.fail(f"cannot parse equation: {err.msg.split('. Perhaps')[0]}", line=line,
                          fix="write one equation per line as `name = expression`; "
                              "use `h'` for the new value of state h")
            except (RecursionError, MemoryError, ValueError):
                self.fail("cannot parse equation: too complex", line=line,
                          fix="split the expression into named intermediate equations")
            body = tree.body
            if (len(body) != 1 or not isinstance(body[0], ast.Assign)
                    or len(body[0].targets) != 1 or not isinstance(body[0].targets[0], ast.Name)):
                self.fail("expected an equation `name = expression`", line=line,
                          fix="one equation per line, e.g. `i = sigmoid(x @ W_xi + h @ W_hi + b_i)`")
            equations.append((body[0].targets[0].id, body[0].value, line, code.strip()))
            size += sum(isinstance(node, ast.expr) for node in ast.walk(body[0].value))
            if len(equations) > MAX_EQUATIONS or size > MAX_TERMS:
                what = (f"more than {MAX_EQUATIONS} equations" if len(equations) > MAX_EQUATIONS
                        else f"more than {MAX_TERMS} terms (names, numbers, operations, calls)")
                self.fail(f"the cell has {what}; the compile time grows with its size",
                          line=line, fix="the largest shipped cell (ln_lstm) has 21 equations "
                          "and 243 terms; a larger model is several layers of smaller cells")
        if not equations:
            self.fail("`equations` holds no equation", line=key_line,
                      fix="add one equation per line, e.g. h' = tanh(x @ W_x + h @ W_h + b)")
        return equations

    # ---- expressions -----------------------------------------------------------
    def convert(self, equations) -> list[Node]:
        states = {s.name for s in self.states}
        self.defined: dict[str, int] = {}
        self.constants: dict[str, tuple] = {}      # name -> (value, line), see `name`
        self.constants_used: set[str] = set()
        self.conditions = set()
        for lhs, _, line, _ in equations:
            self.check_lhs(lhs, line, states)
            self.defined[lhs] = line
        self.node_dim = {name: (self.var_dim[naming.state_of(name)] if naming.state_of(name)
                                else self.dims.fresh()) for name in self.defined}
        nodes = []
        for lhs, tree, line, text in self.dependency_order(equations):
            self.line, self.source = line, naming.spec_text(text)
            expr, dim = self.expr(tree, 0)
            if dim is None and naming.state_of(lhs) is None:   # a named constant, `dt = 0.076`:
                self.constants[lhs] = (expr, line)              # folded where it is used
                continue
            if dim is None:
                self.fail(f"`{naming.display_spec(lhs)}` is a constant: a state's new value needs "
                          "a vector operand", line=line, symbol=naming.display_spec(lhs),
                          fix="multiply by a state or input, or use a parameter")
            self.unify(self.node_dim[lhs], dim, naming.display_spec(lhs), tree)
            nodes.append(Node(lhs, "", expr=expr, line=line, text=text))
        return sorted(nodes, key=lambda n: n.line)      # file order again, for messages

    def dependency_order(self, equations):
        """The equations with each one after those it reads (file order otherwise), so
        a value's dimension is known before it is used: a per-row scalar (`m =
        mean(v)`) broadcasts where a vector would have to match. Cycles are left for
        `topological` to report."""
        by_lhs = {eq[0]: eq for eq in equations}
        order, seen = [], set()

        def visit(eq):
            if eq[0] in seen:
                return
            seen.add(eq[0])
            for name in sorted({n.id for n in ast.walk(eq[1]) if isinstance(n, ast.Name)}):
                if name in by_lhs:
                    visit(by_lhs[name])
            order.append(eq)

        for eq in equations:
            visit(eq)
        return order

    def check_lhs(self, lhs, line, states):
        shown = naming.display_spec(lhs)
        if naming.state_of(lhs) is not None and naming.state_of(lhs) not in states:
            self.fail(f"`{shown}`: only a state has a new value `name'`", line=line,
                      col=self.col_of(line, lhs), symbol=shown,
                      fix="declare it in `states`, or drop the prime")
        if lhs in self.defined:
            self.fail(f"`{shown}` is defined twice (first on line {self.defined[lhs]})",
                      line=line, col=self.col_of(line, lhs), symbol=shown,
                      fix="each name is assigned once; rename one of them")
        if lhs in self.var_dim or lhs in self.param_names:
            hint = f"write `{lhs}' = ...` for its new value" if lhs in states else "rename it"
            self.fail(f"`{lhs}` is an input, state or parameter and cannot be assigned",
                      line=line, col=self.col_of(line, lhs), symbol=lhs, fix=hint)
        if lhs in self.dim_names:
            self.fail(f"`{lhs}` names both a dimension and a value", line=line,
                      col=self.col_of(line, lhs), symbol=lhs,
                      fix=f"rename the value: `{lhs}` already names a size (a dimension)")
        if naming.state_of(lhs) is None:
            self.identifier_at(lhs, line)

    def identifier_at(self, name, line):
        problem = name_problem(name)
        if problem:
            self.fail(f"name `{name}` {problem}", line=line, col=self.col_of(line, name),
                      symbol=name, fix="rename it")

    # ---- whole-cell checks -----------------------------------------------------
    def topological(self, nodes: list[Node]) -> list[Node]:
        by_name = {n.name: n for n in nodes}
        order, state = [], {}

        def visit(node, path):
            if state.get(node.name) == "done":
                return
            if state.get(node.name) == "active":
                cycle = path[path.index(node.name):] + [node.name]
                shown = " -> ".join(naming.display_spec(c) for c in cycle)
                self.fail(f"cyclic definition: {shown}", line=node.line,
                          col=self.col_of(node.line, node.name), symbol=naming.display_spec(node.name),
                          fix="a value cannot depend on itself within a step; read the "
                              "previous state (`h`) instead of the new one (`h'`)")
            state[node.name] = "active"
            for s in sorted(node.expr.free_symbols, key=lambda s: s.name):
                if s.name in by_name:
                    visit(by_name[s.name], path + [node.name])
            state[node.name] = "done"
            order.append(node)

        for node in nodes:
            visit(node, [])
        return order

    def output(self, nodes) -> str:
        out = self.field("output")
        if out is None:
            return naming.new(self.states[0].name)
        ident = naming.spec_text(out.strip())
        if ident in {s.name for s in self.states}:
            ident = naming.new(ident)
        if ident in self.constants:
            self.fail(f"output `{out}` is a constant", line=self.key_line("output"), symbol=out,
                      fix="the output is a vector: name an equation that reads a state or input")
        if ident not in {n.name for n in nodes}:
            self.fail(f"output `{out}` is not defined by an equation."
                      f"{did_you_mean(out, [naming.display_spec(n.name) for n in nodes])}",
                      line=self.key_line("output"), symbol=out,
                      fix="name an equation's left-hand side, e.g. output = \"y\"")
        return ident

    def check_used(self, nodes, output):
        for s in self.states:
            if naming.new(s.name) not in self.defined:
                self.fail(f"state `{s.name}` is never updated", line=self.key_line("states"),
                          col=self.col_of(self.key_line("states"), s.name), symbol=s.name,
                          fix=f"add an equation `{s.name}' = ...` (use `{s.name}' = {s.name}` "
                              "to keep it constant)")
        for name, (_, line) in self.constants.items():
            if name not in self.constants_used:
                self.fail(f"`{name}` is computed but never used", line=line,
                          col=self.col_of(line, name), symbol=name,
                          fix="use it in an equation, or remove it")
        live = live_names(nodes, [naming.new(s.name) for s in self.states] + [output])
        for name, m in self.derived.items():            # a weight expression's parameters
            if name in live:
                live.update(sources(m))
        for n in nodes:
            if n.name not in live:
                self.fail(f"`{naming.display_spec(n.name)}` is computed but never used", line=n.line,
                          col=self.col_of(n.line, n.name), symbol=naming.display_spec(n.name),
                          fix="use it in a state update or the output, or remove it")
        for p in self.param_names:
            if p not in live:
                self.fail(f"parameter `{p}` is declared but never used",
                          line=self.key_line("parameters"),
                          col=self.col_of(self.key_line("parameters"), p), symbol=p,
                          fix="use it in an equation or remove it from `parameters`")

    def resolve(self, var, what, line=None) -> str:
        name = self.dims.name(var)
        if name is None:
            self.fail(f"cannot infer the size of `{naming.display_spec(what)}`", line=line,
                      symbol=naming.display_spec(what),
                      fix="declare the parameter's shape that fixes it, e.g. "
                          "[shapes] W_hq = [\"H\", \"Q\"]")
        return name

    def resolve_params(self) -> tuple[Param, ...]:
        inits = self.field("init", {})
        params = []
        for pname in self.param_names:
            kind = self.param_kind[pname]
            shape = tuple(self.resolve(v, pname, self.key_line("parameters")) for v in kind[1:])
            params.append(Param(pname, shape, self.init(pname, inits.get(pname), len(shape))))
        for name, m in self.derived.items():
            kind = self.param_kind[name]
            shape = tuple(self.resolve(v, name, self.line) for v in kind[1:])
            params.append(Param(name, shape, derived=m))
        for pname in inits:
            if pname not in self.param_names:
                self.fail(f"[init] names `{pname}`, which is not a parameter."
                          f"{did_you_mean(pname, self.param_names)}",
                          line=self.key_line(pname) or self.key_line("init"),
                          symbol=pname, fix="list it in `parameters` or remove it from [init]")
        return tuple(params)

    def init(self, pname, value, rank) -> Init:
        """The `[init]` of one parameter, checked here, so that `init_params` cannot fail
        or write a number that is not one."""
        line = self.key_line(pname) or self.key_line("init")

        def refuse(why, fix="use a number, or one of: default, zeros, ones, orthogonal, "
                            "uniform(a, b), normal(mean, std)"):
            self.fail(f"init of `{pname}`: {why}", line=line, symbol=pname, fix=fix)

        if value is None:
            return Init()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not representable(value):
                refuse("the number is out of range", fix=CONSTANTS_RULE)
            return Init("constant", (float(value),))
        m = _INIT.match(value) if isinstance(value, str) else None
        if not m or m.group(1) not in INIT_KINDS or (m.group(2) is None) != (INIT_KINDS[m.group(1)] == 0):
            shown = repr(value) if isinstance(value, str) else f"a {type(value).__name__}"
            refuse(f"cannot read {shown[:60]}")
        kind = m.group(1)
        args = () if m.group(2) is None else (float(m.group(2)), float(m.group(3)))
        if not all(representable(a) for a in args):
            refuse(f"an argument of {value!r} is out of range", fix=CONSTANTS_RULE)
        if kind == "normal" and args[1] < 0:
            refuse(f"{value!r} has a negative standard deviation",
                   fix="write normal(mean, std) with std >= 0")
        if kind == "uniform" and args[0] > args[1]:
            refuse(f"{value!r} has its bounds the wrong way round",
                   fix=f"write uniform({m.group(3)}, {m.group(2)}): the lower bound first")
        if kind == "orthogonal" and rank != 2:
            refuse("orthogonal applies to a matrix, and this parameter is a vector",
                   fix="use default, zeros, ones, a number, uniform(a, b) or normal(mean, std)")
        return Init(kind, args)
