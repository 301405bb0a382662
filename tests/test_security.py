"""Specs are data, never code.

- cellc's own source never hands text to eval/exec/sympify/parse_expr/pickle;
- a name carrying code, quotes, newlines, Unicode look-alikes or a keyword is refused
  with a SpecError, whatever field it is in, and nothing runs;
- free text (summary, reference, the file's name) cannot leave the docstring or comment
  it is printed in;
- no legal name collides with the generated module's own names: every identifier the
  shipped modules use, given to a cell as a value, parameter, state or dimension name,
  gives the interpreter's results.
"""
import ast
import glob
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cellcheck import compare

from cellc import SpecError, __version__
from cellc.driver import compile_bytes, write_atomic
from cellc.runtime.loader import import_file
from cellc.frontend.spec import name_problem

ROOT = Path(__file__).resolve().parent.parent


def toml(fields: dict) -> bytes:
    """A spec from a dict. JSON strings and lists are valid TOML values, and keep any
    payload (quotes, newlines, NUL) intact."""
    lines = []
    tables = {k: v for k, v in fields.items() if isinstance(v, dict)}
    for key, value in fields.items():
        if key not in tables:
            lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
    for key, table in tables.items():
        lines.append(f"[{key}]")
        lines += [f"{json.dumps(k, ensure_ascii=False)} = {json.dumps(v, ensure_ascii=False)}"
                  for k, v in table.items()]
    return ("\n".join(lines) + "\n").encode()


ELMAN = {"name": "cell", "summary": "Elman", "inputs": ["x"], "states": ["h"],
         "parameters": ["W", "U", "b"], "equations": "h' = tanh(x @ W + h @ U + b)\n"}


# ---- the compiler never evaluates text -------------------------------------------------
BUILTINS = {"eval", "exec", "compile", "__import__"}      # called by bare name
SYMPY_PARSERS = {"sympify", "parse_expr", "S"}            # however they are reached
FORBIDDEN_IMPORTS = {"pickle", "marshal", "shelve", "dill", "cloudpickle"}


def test_cellc_source_never_evaluates_text():
    found = []
    for path in sorted((ROOT / "cellc").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)
                if (isinstance(f, ast.Name) and name in BUILTINS) or name in SYMPY_PARSERS:
                    found.append(f"{path.name}:{node.lineno} calls {name}")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                           else [node.module or ""])
                found += [f"{path.name}:{node.lineno} imports {m}" for m in modules
                          if m.split(".")[0] in FORBIDDEN_IMPORTS]
    assert not found, found


# ---- names that try to be code ---------------------------------------------------------
CANARY = "cellc_canary_file"
PAYLOADS = [
    f"__import__('os').system('touch {CANARY}')",
    "x; import os",
    "x\nimport os",
    "a'b", 'a"b', "a b", "h)", "h #", "1h", "",
    "h\u0456",          # Cyrillic i: looks like `hi`
    "\uff48",           # fullwidth h: Python would read it as `h` (NFKC)
    "\u202eh",          # right-to-left override
    "h\x00",
    "lambda", "None",                   # keywords (the module's own names are free: below)
    "a__b",
]


def put(role: str, payload: str) -> dict:
    f = json.loads(json.dumps(ELMAN))
    if role == "name":
        f["name"] = payload
    elif role == "input":
        f["inputs"], f["equations"] = [payload], f["equations"].replace("x @", f"{payload} @")
    elif role == "input dimension":
        f["inputs"] = {"x": payload}
    elif role == "state":
        f["states"] = [payload]
        f["equations"] = f"{payload}' = tanh(x @ W + {payload} @ U + b)\n"
    elif role == "state dimension":
        f["states"] = {"h": payload}
    elif role == "parameter":
        f["parameters"] = ["W", "U", payload]
        f["equations"] = f"h' = tanh(x @ W + h @ U + {payload})\n"
    elif role == "output":
        f["output"] = payload
    elif role == "init":
        f["init"] = {payload: 1.0}
    elif role == "shapes":
        f["shapes"] = {payload: ["H"]}
    elif role == "shape dimension":
        f["shapes"] = {"b": [payload]}
    elif role == "equation name":
        f["equations"] = f"{payload} = tanh(x @ W + h @ U + b)\nh' = {payload}\n"
    elif role == "equation":
        f["equations"] = f"h' = tanh(x @ W + h @ U + b) * {payload}\n"
    return f


ROLES = ["name", "input", "input dimension", "state", "state dimension", "parameter",
         "output", "init", "shapes", "shape dimension", "equation name", "equation"]


@pytest.mark.parametrize("role", ROLES)
def test_payload_names_are_refused_in_every_field(role, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for payload in PAYLOADS:
        if role == "equation" and payload == "h #":
            continue            # `* h  # a comment` is a legal equation
        raw = toml(put(role, payload))
        with pytest.raises(SpecError) as info:
            compile_bytes(raw, "specs/evil.toml")
        text = str(info.value)
        assert text.startswith("specs/evil.toml"), (payload, text)
        assert "Traceback" not in text
    assert not (tmp_path / CANARY).exists()


def test_python_constructs_in_equations_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for rhs in [f"__import__('os').system('touch {CANARY}')", "(lambda: 1)()",
                "[v for v in h]", "h.__class__", "h[0]", "f'{h}'", "(q := h)", "*h",
                "h if h else x", "getattr(h, 'T')", "open('/etc/passwd')", "1j * h",
                "h and x", "not h", "{h}", "...", "b'x'", "None"]:
        f = dict(ELMAN, equations=f"h' = tanh(x @ W + h @ U + b) + ({rhs})\n")
        with pytest.raises(SpecError):
            compile_bytes(toml(f), "specs/evil.toml")
    assert not (tmp_path / CANARY).exists()


# ---- free text stays text ---------------------------------------------------------------
TEXTS = ['x"""\nimport os; os.system("touch %s")\n"""' % CANARY,
         "ends with a quote\"", "back\\slash \\N{BULLET} \\x41", "line\rfeed\x0c\x00nul",
         "bidi \u202e\u2066 and separator \u2028 \u2029 \U000e0001", "ünïcödé ∂h/∂t",
         # PEP 263: on a module's first two lines this would make Python decode the file
         # with unicode_escape, so that the escaped quotes below end the docstring
         'a coding=unicode_escape b\\"\\"\\"\\nimport os; os.system(\\"touch %s\\")\\n' % CANARY,
         "-*- coding: latin-1 -*- \u00e9\u00e8", "\x1b]0;retitled\x07\x1b[2J"]


@pytest.mark.parametrize("field", ["summary", "reference", "file name"])
def test_free_text_cannot_leave_its_docstring(field, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    benign = ast.parse(compile_bytes(toml(ELMAN), "cell.toml").source)
    shape = [type(stmt).__name__ for stmt in benign.body]
    for k, text in enumerate(TEXTS):
        fields, name = dict(ELMAN, name=f"cell{k}"), "cell.toml"
        if field == "file name":
            name = text + ".toml"
        else:
            fields[field] = text
        source = compile_bytes(toml(fields), name).source
        tree = ast.parse(source.encode("utf-8"))      # as Python reads the file: bytes
        assert [type(stmt).__name__ for stmt in tree.body] == shape
        lines = source.splitlines()
        digest = hashlib.sha256(toml(fields)).hexdigest()[:16]
        assert lines[:2] == [f"# Generated by cellc {__version__} (spec sha256 {digest}); "
                             "needs only numpy and numba.",
                             "# Do not edit: edit the spec and run `cellc compile`."]
        doc = ast.get_docstring(tree, clean=False)
        if field == "summary":
            assert doc.startswith(f"cell{k}: {text}\n")
        elif field == "reference":
            assert f"\nReference: {text}\n" in doc
        else:
            assert f"\nCompiled from {Path(name).name}.\n" in doc
        path = tmp_path / f"cell{k}.py"
        write_atomic(path, source)
        module = import_file(path, f"textcell{k}_{field.replace(' ', '_')}")
        assert module.__doc__ == doc
    assert not (tmp_path / CANARY).exists()


# ---- no legal name collides with the module's own ----------------------------------------
def module_identifiers() -> list[str]:
    """Every identifier the shipped generated modules use that a spec may also use."""
    names = set()
    for path in glob.glob(str(ROOT / "generated" / "*.py")):
        for node in ast.walk(ast.parse(Path(path).read_text(encoding="utf-8"))):
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.alias):
                names.add((node.asname or node.name).split(".")[0])
    return sorted(n for n in names if name_problem(n) is None and n not in "xhWUHI")


def run_against_interpreter(fields: dict, tmp_path, sizes) -> float:
    compiled = compile_bytes(toml(fields), "collide.toml")
    path = tmp_path / f"{fields['name']}.py"
    write_atomic(path, compiled.source)
    module = import_file(path, f"collide_{fields['name']}")
    errors = compare(module, compiled.cell, T=3, B=2, sizes=sizes, dtype=np.float64, seed=1)
    return max(errors.values())


def test_module_identifiers_as_values_and_parameters(tmp_path):
    names = module_identifiers()
    assert len(names) > 60       # the harvest found the modules' names
    names = names[:: len(names) // 150 + 1]       # within the bound on equations
    nodes, vectors = names[0::2], names[1::2]
    equations, previous = ["n0 = x @ W + h @ U"], "n0"
    for k, name in enumerate(nodes):
        v = vectors[k % len(vectors)]
        equations.append(f"{name} = tanh({previous}) * {v} + sigmoid({previous})" if k % 2
                         else f"{name} = {previous} * 0.5 + tanh({previous} * {v})")
        previous = name
    equations.append(f"h' = tanh({previous})")
    fields = dict(ELMAN, name="values", parameters=["W", "U", *vectors],
                  equations="\n".join(equations))
    assert run_against_interpreter(fields, tmp_path, {"I": 3, "H": 4}) < 1e-12


def test_module_identifiers_as_states_and_dimensions(tmp_path):
    names = module_identifiers()
    pairs = list(zip(names[0::2], names[1::2]))[:12]
    (x, xdim), states = pairs[0], pairs[1:]
    equations, parameters, previous = [], [], x
    for k, (s, _) in enumerate(states):
        parameters += [f"W{k}", f"U{k}"]
        equations.append(f"{s}' = tanh({previous} @ W{k} + {s} @ U{k})")
        previous = s
    fields = {"name": "dims", "inputs": {x: xdim}, "states": dict(states),
              "parameters": parameters, "output": f"{previous}'",
              "equations": "\n".join(equations)}
    sizes = {d: 2 + k % 3 for k, (_, d) in enumerate(pairs)}
    assert run_against_interpreter(fields, tmp_path, sizes) < 1e-12


# ---- nor does it reach a terminal, a page or a drawing raw --------------------------------
EVIL = "\x1b]0;retitled\x07\x1b[2J<script>alert(1)</script>\n# heading [link](javascript:x)"


def test_spec_text_reaches_no_terminal_raw(tmp_path):
    """`cellc show` and every error print a spec's text (summary, file name, a line) with
    its control characters escaped: a spec cannot clear or retitle the terminal."""
    name = tmp_path / "evil\x1b[2J.toml"
    name.write_bytes(toml(dict(ELMAN, summary=EVIL, reference=EVIL)))
    bad = tmp_path / "bad\x1b]0;t\x07.toml"
    bad.write_bytes(toml(dict(ELMAN, equations="h' = tanh(x @ W + h @ U + b) \x1b[2J\n")))
    for command, stream in ((["show", str(name)], "stdout"), (["show", str(bad)], "stderr"),
                            (["compile", str(bad), "-o", str(tmp_path)], "stderr"),
                            (["compile", str(name), "-o", str(tmp_path)], "stderr")):
        result = subprocess.run([sys.executable, "-m", "cellc", *command], cwd=ROOT,
                                capture_output=True, text=True)
        text = getattr(result, stream)
        assert text and not set(text) & {"\x1b", "\x07"}, (command, text)
        assert "\\x1b" in text, (command, text)          # there, escaped


def test_spec_text_is_plain_text_on_a_docs_page(tmp_path):
    from cellc.tools import docs
    path = tmp_path / "evil.toml"
    path.write_bytes(toml(dict(ELMAN, summary=EVIL, reference=EVIL)))
    _, page, dot = docs.page(path)
    assert "<script" not in page and "\x1b" not in page and "[link](" not in page
    assert [line for line in page.splitlines() if line.startswith("# ")] == ["# cell"]
    assert "<script" not in dot and "\x1b" not in dot
