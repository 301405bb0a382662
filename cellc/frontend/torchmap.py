"""A spec's optional `[torch]` table: how a torch.nn.RNN/LSTM/GRU's weights map onto the
cell's parameters, for weight import and export (`cellc.torch`) and for tests.

    [torch]
    module = "LSTM"                       # RNN, LSTM or GRU; RNN also takes nonlinearity
    W_xi = "weight_ih[0].T"               # block 0 of weight_ih_l{k}, transposed
    b_i  = "bias_ih[0] + bias_hh[0]"      # the two biases fold into one

`weight_ih[k]` is torch's k-th block of `hidden_size` rows (its k-th gate). Every
parameter must be mapped; a torch block no parameter names is zero on export.
`weight_hr[0]` is torch.nn.LSTM's projection (`proj_size`), one block of all its rows.
"""
from __future__ import annotations

import re
from typing import NamedTuple

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
TENSORS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
_TERM = re.compile(r"\s*(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)\s*\[\s*(\d{1,3})\s*\]"
                   r"\s*(\.\s*T)?\s*\Z")


class Term(NamedTuple):
    tensor: str          # one of TENSORS
    block: int           # which block of hidden_size rows
    transpose: bool


class TorchMap(NamedTuple):
    module: str                                   # "RNN", "LSTM" or "GRU"
    options: tuple[tuple[str, str], ...]          # constructor keywords, e.g. nonlinearity
    params: tuple[tuple[str, tuple[Term, ...]], ...]

    def as_dict(self) -> dict:
        """Plain data for the generated module's TORCH constant."""
        return {"module": self.module, "options": dict(self.options),
                "params": {p: [tuple(t) for t in terms] for p, terms in self.params}}


def parse_torch_table(table: dict, params: dict[str, int], fail, line_of) -> TorchMap:
    """Check a `[torch]` table. `params` maps each parameter to its rank; `fail(message,
    line=, symbol=, fix=)` raises the spec error, `line_of(key)` finds a key's line."""
    table = dict(table)
    module = table.pop("module", None)
    if not isinstance(module, str) or module not in GATES:
        fail(f"[torch] needs `module` = one of {', '.join(map(repr, GATES))}, not {module!r}",
             line=line_of("module") or line_of("torch"), symbol="module",
             fix='e.g. module = "LSTM"')
    options = []
    nonlinearity = table.pop("nonlinearity", None)
    if nonlinearity is not None:
        if module != "RNN" or not isinstance(nonlinearity, str) or nonlinearity not in (
                "tanh", "relu"):
            fail(f"[torch] nonlinearity = {nonlinearity!r} is not a torch.nn.{module} option",
                 line=line_of("nonlinearity"), symbol="nonlinearity",
                 fix='only module = "RNN" takes nonlinearity = "tanh" or "relu"')
        options.append(("nonlinearity", nonlinearity))
    mapped = []
    for pname, text in table.items():
        line = line_of(pname)
        if pname not in params:
            fail(f"[torch] maps `{pname}`, which is not a parameter", line=line, symbol=pname,
                 fix="map each name in `parameters`, and only those")
        if not isinstance(text, str) or not text.strip():
            fail(f"[torch] `{pname}` must be a string like \"weight_ih[0].T\"", line=line,
                 symbol=pname, fix='e.g. W_xi = "weight_ih[0].T", b_i = "bias_ih[0] + bias_hh[0]"')
        terms = []
        for part in text.split("+"):
            m = _TERM.match(part)
            if not m:
                fail(f"[torch] cannot read {part.strip()!r} in the mapping of `{pname}`",
                     line=line, symbol=pname,
                     fix="terms are weight_ih[k], weight_hh[k], bias_ih[k], bias_hh[k] or "
                         "weight_hr[0], weights with .T, joined by +")
            term = Term(m.group(1), int(m.group(2)), m.group(3) is not None)
            if term.tensor == "weight_hr" and module != "LSTM":
                fail(f"[torch] weight_hr: torch.nn.{module} has no projection", line=line,
                     symbol=pname, fix='only module = "LSTM" has weight_hr (proj_size)')
            blocks = 1 if term.tensor == "weight_hr" else GATES[module]
            if term.block >= blocks:
                fail(f"[torch] block {term.block} of {term.tensor}: torch.nn.{module} has "
                     f"{blocks} block(s) there", line=line, symbol=pname,
                     fix=f"use blocks 0..{blocks - 1}")
            rank = 2 if term.tensor.startswith("weight") else 1
            if rank != params[pname] or (term.transpose and rank == 1):
                fail(f"[torch] `{pname}` has rank {params[pname]} but maps to "
                     f"{part.strip()!r}", line=line, symbol=pname,
                     fix="matrices map to weight_ih[k].T, weight_hh[k].T or weight_hr[0].T, "
                         "vectors to biases")
            terms.append(term)
        mapped.append((pname, tuple(terms)))
    missing = [p for p in params if p not in table]
    if missing:
        fail(f"[torch] does not map {', '.join(f'`{p}`' for p in missing)}",
             line=line_of("torch"), symbol=missing[0],
             fix="give every parameter a mapping, e.g. b_i = \"bias_ih[0] + bias_hh[0]\"")
    return TorchMap(module, tuple(options), tuple(mapped))
