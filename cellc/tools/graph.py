"""`cellc graph`: a cell's dataflow as a graphviz drawing, from the compiler's own plan.

Inputs (green) and previous states (blue) flow through the fused GEMMs (orange boxes,
one per fused weight matrix, its weights listed) and the elementwise values (white:
gates and intermediates, each with its equation) to the new states (blue double
octagons) and the output. Each fused elementwise kernel is a dashed cluster, so the
drawing is also the fusion plan. Parameters are grey. A dotted edge carries each new
state to the next step.

The DOT text is built here and is deterministic; graphviz's `dot` program only lays it
out (`scripts/install-graphviz` installs it).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import graphviz

from .. import naming
from ..driver import IRs
from ..errors import SpecError
from ..ir.cell import ONE
from . import mathtext

_STYLE = {
    "input": dict(shape="ellipse", style="filled", fillcolor="#c8e6c9"),
    "state": dict(shape="ellipse", style="filled", fillcolor="#bbdefb"),
    "new": dict(shape="doubleoctagon", style="filled", fillcolor="#90caf9"),
    "param": dict(shape="box", style="filled", fillcolor="#eeeeee", fontsize="10"),
    "gemm": dict(shape="box", style="filled,bold", fillcolor="#ffe0b2"),
    "value": dict(shape="box", style="rounded"),
}


def _id(name: str) -> str:
    return "v_" + name


def dataflow(compiled: IRs) -> graphviz.Digraph:
    d = compiled.derivation
    cell = d.plan.cell
    member = {}                         # affine node -> its fused GEMM's graph id
    new_states = {naming.new(s.name) for s in cell.states}
    g = graphviz.Digraph(cell.name, graph_attr=dict(rankdir="TB", fontname="Helvetica",
                                                    label=f"{cell.name}: dataflow of one step",
                                                    labelloc="t", fontsize="16"),
                         node_attr=dict(fontname="Helvetica", fontsize="12"),
                         edge_attr=dict(color="#555555"))
    for v in cell.inputs:
        g.node(_id(v.name), f"{v.name}  [{v.dim}]", **_STYLE["input"])
    for s in cell.states:
        g.node(_id(s.name), f"{s.name}  [{s.dim}]  (t-1)", **_STYLE["state"])
    for p in cell.params:
        shape = "scalar" if p.shape == (ONE,) else " × ".join(p.shape)
        g.node(_id(p.name), f"{p.name}  [{shape}]", **_STYLE["param"])
    for kind, program in (("before the time loop", d.plan.static), ("each step", d.plan.step)):
        for stage in program:
            for gemm in stage.gemms:
                weights = " | ".join(n.weight for n in gemm.nodes)
                gid = "gemm_" + gemm.operand
                g.node(gid, f"GEMM\n{mathtext.unicode_name(gemm.operand)} @ [{weights}]",
                       **_STYLE["gemm"])
                g.edge(_id(gemm.operand), gid)
                for n in gemm.nodes:
                    g.edge(_id(n.weight), gid, style="dashed")
                    member[n.name] = gid
            for region in stage.regions:
                with g.subgraph(name=f"cluster_{region.name}") as sub:
                    sub.attr(label=f"kernel {region.name} ({kind})", style="dashed",
                             color="#9e9e9e", fontsize="11")
                    for n in region.nodes:
                        style = _STYLE["new"] if n.name in new_states else _STYLE["value"]
                        text = mathtext.equation(n.name, n.expr)
                        if n.name == cell.output:
                            text += "\n(output)"
                        sub.node(_id(n.name), text, **style)
    for n in cell.nodes:
        if n.is_matmul:
            continue
        for r in n.reads():
            g.edge(member.get(r, _id(r)), _id(n.name))
    for s in cell.states:
        g.edge(_id(naming.new(s.name)), _id(s.name), style="dotted", constraint="false",
               label="next step", fontsize="10")
    return g


def write(compiled: IRs, out: Path) -> Path:
    """Write the drawing to `out`: .dot (the DOT text), or .svg/.png/.pdf laid out by
    graphviz's `dot`."""
    g = dataflow(compiled)
    fmt = out.suffix.lstrip(".").lower()
    if fmt in ("dot", "gv"):
        out.write_text(g.source, encoding="utf-8")
        return out
    if fmt not in ("svg", "png", "pdf"):
        raise SpecError(f"cannot draw to {out.name}: unknown format `.{fmt}`", path=str(out),
                        fix="name the output .svg, .png, .pdf or .dot")
    if shutil.which("dot") is None:
        raise SpecError("graphviz's `dot` program is not installed, so the drawing cannot "
                        "be laid out", path=str(out),
                        fix="run scripts/install-graphviz (apt-get install graphviz), or "
                            "write the DOT text with -o cell.dot")
    out.write_bytes(g.pipe(format=fmt))
    return out
