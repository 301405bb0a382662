"""Zoneout and recurrent dropout for any cell, as a rewrite of its equations.

Both regularizers multiply values of one step by random masks. The masks become extra
inputs of the cell, inputs without gradients, so nothing downstream knows about them:
the interpreter runs the rewritten equations, `derive` differentiates them like any
other, and the kernels keep the masks in forward's cache, so backward replays exactly
the masks forward drew.

Zoneout (Krueger et al. 2016). Each unit of a state keeps its previous value, with
probability p, at every step:

    s' = zoneout__s * s + (1 - zoneout__s) * u      zoneout__s ~ Bernoulli(p), per unit and step

where `u` is the spec's own update of `s` (renamed `update__s`). Other equations that
read `s'` within the step read `u`, as in the paper's LSTM, whose `h'` is `o * tanh(c')`
of the cell state before zoneout (TensorFlow's ZoneoutWrapper does the same). The next
step, the final states and the output sequence, when it is a state, see the zoned `s'`,
so `outputs[-1]` is still the final state. At evaluation the mask is its expectation p.

Recurrent dropout (Gal & Ghahramani 2016). A state is dropped where it enters a matrix
product: every `... @ W` operand reads `dropped__s = s * dropout__s` instead of `s`, with
one mask per sequence, the same at every step (Bernoulli(1 - p) / (1 - p): inverted
dropout, so evaluation runs the cell as written). Cho's GRU's `(r * s) @ W` becomes
`(r * dropped__s) @ W`, as Keras writes it. The states that no matrix product reads (an
LSTM's `c`, an IndRNN's `h`) have nothing to drop.

The names added all contain `__`, which no spec name may, so they cannot collide.
"""
from __future__ import annotations

import sympy

from .. import naming
from ..ir.cell import Affine, Cell, Node, Var, format_equation, live_names, symbol, typecheck
from ..runtime.regularizers import Regularizers


def matmul_states(cell: Cell) -> tuple[str, ...]:
    """The states a matrix product reads, in the spec's order: those recurrent dropout
    can drop. Expects the front end's IR (before `split`)."""
    reach = _reach(cell)
    read = {s for node in cell.nodes for term in node.expr.atoms(Affine)
            for v in term.args[0].free_symbols for s in reach.get(v.name, ())}
    return tuple(s.name for s in cell.states if s.name in read)


def _outside_products(expr, mapping: dict):
    """`expr.xreplace(mapping)` everywhere but inside its matrix products."""
    hidden = {term: sympy.Dummy() for term in expr.atoms(Affine)}
    back = {d: term for term, d in hidden.items()}
    return expr.xreplace(hidden).xreplace(mapping).xreplace(back)


def _reach(cell: Cell) -> dict[str, frozenset]:
    """For each value, the previous states it reads through elementwise equations only:
    not through a matrix product, nor through a state's new value (the next step's
    state, whose own path to a product is the next step's business). An LSTMP's
    projection `(o * tanh(c')) @ W_hr` reads `h` through `o`, and not `c`."""
    reach = {s.name: frozenset([s.name]) for s in cell.states}
    news = {naming.new(s.name) for s in cell.states}
    for node in cell.nodes:
        marker = sympy.Dummy()
        read = node.expr.replace(Affine, lambda *_: marker)
        reach[node.name] = frozenset() if node.name in news else frozenset().union(
            *(reach.get(v.name, ()) for v in read.free_symbols))
    return reach


def regularize(cell: Cell, regularizers: Regularizers) -> Cell:
    """The cell with the given states zoned out and dropped (see the module docstring).
    Expects the front end's IR (before `split`). ValueError for a state the cell does
    not have, or a dropped state that no matrix product reads."""
    if not regularizers:
        return cell
    dims = {s.name: s.dim for s in cell.states}
    regularizers.check(cell.name, dims, matmul_states(cell))
    assert not any(n.is_matmul for n in cell.nodes), "regularize runs before split"
    nodes = _drop(cell, regularizers.recurrent_dropout)
    nodes = _zone_out(nodes, regularizers.zoneout)
    live = live_names(nodes, [naming.new(s) for s in dims] + [cell.output])
    masks = ([Var(naming.zoneout_mask(s), dims[s], grad=False) for s in regularizers.zoneout]
             + [Var(naming.dropout_mask(s), dims[s], grad=False)
                for s in regularizers.recurrent_dropout])
    return typecheck(cell._replace(inputs=cell.inputs + tuple(masks),
                                   nodes=tuple(n for n in nodes if n.name in live),
                                   regularizers=regularizers))


def _drop(cell: Cell, states: tuple[str, ...]) -> list[Node]:
    """Recurrent dropout: every matrix product reads `dropped__s = s * dropout__s` for
    each dropped state s. A value between s and the product (`rh = r * h` in `rh @ W`)
    is copied as `dropped__rh = r * dropped__h`, since the original may have other
    readers; an original nothing reads any more is removed by the caller."""
    if not states:
        return list(cell.nodes)
    by_name = {n.name: n for n in cell.nodes}
    reach = _reach(cell)
    dims = {v.name: v.dim for v in cell.states}
    first_line = min((n.line for n in cell.nodes if n.line), default=None)
    copies = {s: _described(Node(naming.dropped(s), dims[s],
                                 expr=symbol(s) * symbol(naming.dropout_mask(s)), line=first_line))
              for s in states}

    def copy_of(name: str) -> str:
        """What a matrix product reads in place of `name`."""
        if name in copies:
            return copies[name].name
        if name not in by_name or not reach[name] & set(states):
            return name
        node = by_name[name]
        expr = _outside_products(rewrite(node.expr), renaming(node.expr))
        copies[name] = _described(node._replace(name=naming.dropped(name), expr=expr))
        return copies[name].name

    def renaming(expr) -> dict:
        return {v: symbol(copy_of(v.name)) for v in expr.free_symbols}

    def rewrite(expr):
        return expr.replace(Affine, lambda operand, weight: Affine(
            operand.xreplace(renaming(operand)), weight))

    nodes = [n._replace(expr=rewrite(n.expr)) for n in cell.nodes]
    ordered = [copies[s] for s in states]
    for n in nodes:          # each copy right after its original: before every reader
        ordered.append(n)
        if n.name in copies:
            ordered.append(copies[n.name])
    return ordered


def _described(node: Node) -> Node:
    """A node this pass wrote, with its equation as its text (for the kernels' comments)."""
    return node._replace(text=format_equation(node))


def _zone_out(nodes: list[Node], states: tuple[str, ...]) -> list[Node]:
    """Zoneout: the spec's update of s becomes `update__s`, which the step's other
    equations read; `s'` is the zoned mix of it and s."""
    updates = {symbol(naming.new(s)): symbol(naming.update(s)) for s in states}
    out, zoned = [], []
    for n in nodes:
        n = n._replace(expr=n.expr.xreplace(updates))
        if symbol(n.name) in updates:
            s, update = naming.state_of(n.name), updates[symbol(n.name)]
            m = symbol(naming.zoneout_mask(s))
            zoned.append(_described(Node(n.name, n.dim, expr=m * symbol(s) + (1 - m) * update,
                                         line=n.line)))
            n = n._replace(name=update.name)
        out.append(n)
    return out + zoned
