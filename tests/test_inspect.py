"""Seeing what the compiler did: `cellc show`, `graph`, `docs`, `new`, and the CLI's
help and errors."""
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, SPECS

from cellc.tools import docs, graph, show
from cellc.tools.cli import main
from cellc.driver import compile_spec


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_show_and_graph_work_for_every_spec(spec, capsys):
    assert main(["show", str(spec), "--sizes", "I=8,H=16"]) == 0
    text = capsys.readouterr().out
    cell = compile_spec(spec).cell
    for s in cell.states:                                   # every update is printed
        assert re.search(rf"^  {s.name}′ = ", text, re.M), s.name
    assert "Backward, as derived" in text and "∂" in text
    total = sum(int(np.prod([{"I": 8, "H": 16, "1": 1}.get(d, 64) for d in p.shape]))
                for p in cell.params if p.derived is None)      # not weight expressions
    assert re.search(rf"^  total\s+{total:,}$", text, re.M)
    assert main(["show", str(spec), "--latex"]) == 0
    tex = capsys.readouterr().out
    assert "\\" in tex.split("Backward")[0] and "⊙" not in tex.split("Parameters")[0]
    dot = graph.dataflow(compile_spec(spec)).source
    for v in [*cell.inputs, *cell.states]:
        assert f"v_{v.name} [label=\"{v.name}  [{v.dim}]" in dot
    for p in cell.params:
        assert f"v_{p.name} " in dot


def test_show_counts_flops_and_bytes_of_an_lstm():
    r = show.report(ROOT / "specs" / "lstm.toml", {"I": 32, "H": 64}, batch=16)
    c = show.cost(r)
    assert c["forward GEMM FLOPs"] == 2 * 16 * (32 * 256 + 64 * 256)
    assert c["backward GEMM FLOPs"] == 2 * c["forward GEMM FLOPs"]
    assert 0 < c["forward elementwise FLOPs"] < c["forward GEMM FLOPs"]
    assert c["forward bytes"] > 4 * (32 * 256 + 64 * 256)          # at least the weights
    plan = "\n".join(show.fusion_plan(r))
    assert "x @ [W_xi | W_xf | W_xg | W_xo]   (I × 4H)" in plan
    assert "kernel  step1 over H: i, f, g, o, c′, h′" in plan


def test_show_names_the_reduction_loops_of_a_layer_normalized_lstm():
    r = show.report(ROOT / "specs" / "ln_lstm.toml")
    plan = "\n".join(show.fusion_plan(r))
    assert "5 unit loops (reductions)" in plan            # mean, var of gates, of c'
    kernels = dict(show.backward_equations(r))
    step = next(eqs for title, eqs in kernels.items() if "step1 " in title)
    assert sum(line.startswith("-- unit loop") for line in step) == 5
    assert any("Σ∂" in line for line in step)              # sums over the units


@pytest.mark.skipif(shutil.which("dot") is None, reason="scripts/install-graphviz")
def test_graph_draws_svg_and_png(tmp_path):
    assert main(["graph", str(ROOT / "specs" / "gru_cho.toml"), "-o", str(tmp_path / "g.svg")]) == 0
    svg = (tmp_path / "g.svg").read_text()
    assert "<svg" in svg and "GEMM" in svg and "kernel step2" in svg
    assert main(["graph", str(ROOT / "specs" / "lstm.toml"), "-o", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_docs_are_rebuilt_and_checked_for_staleness(tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    text = (ROOT / "specs" / "mgu.toml").read_text()
    (specs / "mgu.toml").write_text(text)
    out = tmp_path / "docs"
    gen = tmp_path / "gen"
    assert main(["compile", str(specs), "-o", str(gen)]) == 0
    assert main(["docs", str(specs), "-o", str(out)]) == 0
    page = (out / "mgu.md").read_text()
    assert "## Backward, as derived" in page and "![dataflow of mgu](mgu.svg)" in page
    assert main(["check", str(specs), "-o", str(gen), "--docs", str(out)]) == 0
    (out / "mgu.svg").write_text((out / "mgu.svg").read_text().replace("sha256 ", "sha256 0"))
    assert main(["check", str(specs), "-o", str(gen), "--docs", str(out)]) == 1
    assert main(["docs", str(specs), "-o", str(out)]) == 0
    (specs / "mgu.toml").write_text(text.replace("tanh(", "sigmoid("))
    assert main(["compile", str(specs), "-o", str(gen)]) == 0
    assert main(["check", str(specs), "-o", str(gen), "--docs", str(out)]) == 1


def test_every_shipped_spec_has_its_page():
    pages = {p.stem for p in (ROOT / "docs" / "cells").glob("*.md")}
    assert pages == {s.stem for s in SPECS}
    assert docs.problems(ROOT / "docs" / "cells", docs.expected(SPECS)) == []


def test_new_writes_a_starter_that_compiles_and_is_right(tmp_path, capsys):
    from cellcheck import compare
    from cellc import load
    from cellc.passes import split
    from cellc.frontend.spec import read_spec
    path = tmp_path / "mycell.toml"
    assert main(["new", "mycell", "-o", str(path)]) == 0
    module = load(path)
    errors = compare(module, split(read_spec(path)), T=4, B=2, sizes={"I": 3, "H": 5},
                     dtype=np.float64, seed=1)
    assert max(errors.values()) < 1e-12
    assert main(["new", "mycell", "-o", str(path)]) == 1              # no silent overwrite
    assert "exists already" in capsys.readouterr().err
    assert main(["new", "mycell", "-o", str(path), "--force"]) == 0
    assert main(["new", "my-cell", "-o", str(tmp_path / "x.toml")]) == 1


@pytest.mark.parametrize("command", ["compile", "check", "show", "graph", "docs", "new"])
def test_every_command_has_help_with_examples(command):
    result = subprocess.run([sys.executable, "-m", "cellc", command, "--help"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0 and "examples:" in result.stdout and "cellc " + command in result.stdout


def test_errors_are_one_paragraph_unless_debug(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\ninputs = ["x"]\nstates = ["h"]\nparameters = ["W"]\n'
                   'equations = "h\' = tanh(x @ W + q)"\n')
    for command in (["show", str(bad)], ["graph", str(bad), "-o", str(tmp_path / "g.svg")],
                    ["compile", str(bad), "-o", str(tmp_path)], ["show", str(tmp_path / "none.toml")]):
        result = subprocess.run([sys.executable, "-m", "cellc", *command], cwd=ROOT,
                                capture_output=True, text=True)
        assert result.returncode == 1 and "Traceback" not in result.stderr, command
        assert result.stderr.count("\n\n") == 0 and "error:" in result.stderr
    result = subprocess.run([sys.executable, "-m", "cellc", "--debug", "show", str(bad)],
                            cwd=ROOT, capture_output=True, text=True)
    assert "Traceback" in result.stderr
