"""Zoneout and recurrent dropout at run time: which states, at what rates, and the masks.

The compiled side is `passes/regularize.py`: a cell's variant whose equations multiply
states by masks, read as extra inputs (`zoneout__s`, `dropout__s`). This module is what
a layer needs to drive that variant, and imports neither SymPy nor the compiler:

  * `Regularizers` names the states zoned out and dropped: one compiled variant each;
  * `Rates` holds a layer's rates per state, resolved against a cell;
  * `Rates.masks` draws the masks of one run, or gives their expectations at evaluation.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import naming


class Regularizers(NamedTuple):
    """Which states are zoned out and which are dropped in matrix products (the rates
    are not compiled in: they live in the masks). Build with `of(...)`, which sorts."""

    zoneout: tuple[str, ...] = ()
    recurrent_dropout: tuple[str, ...] = ()

    @classmethod
    def of(cls, zoneout=(), recurrent_dropout=()) -> "Regularizers":
        """One canonical value per variant, whatever the order the states come in."""
        for what, names in (("zoneout", zoneout), ("recurrent_dropout", recurrent_dropout)):
            if isinstance(names, str) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"{what} takes a list of state names, not {names!r}")
        return cls(tuple(sorted(set(zoneout))), tuple(sorted(set(recurrent_dropout))))

    def check(self, cell_name: str, states, matmul_states) -> None:
        """A ValueError naming the problem unless every state exists and every dropped
        state enters a matrix product."""
        for what, names in (("zoneout", self.zoneout),
                            ("recurrent dropout", self.recurrent_dropout)):
            unknown = [n for n in names if n not in states]
            if unknown:
                raise ValueError(f"{what}: {cell_name} has no state {unknown[0]!r}; its "
                                 f"states are {list(states)}")
        idle = [n for n in self.recurrent_dropout if n not in matmul_states]
        if idle:
            raise ValueError(
                f"recurrent dropout: no matrix product of {cell_name} reads state "
                f"{idle[0]!r}, so there is nothing to drop; "
                + (f"the states it can drop are {list(matmul_states)}" if matmul_states
                   else "this cell has no recurrent matrix product (use zoneout)"))

    def __bool__(self) -> bool:
        return bool(self.zoneout or self.recurrent_dropout)

    def tag(self) -> str:
        """A short, deterministic name for this variant (`zoneout-c-h_dropout-h`)."""
        parts = [f"zoneout-{'-'.join(self.zoneout)}" if self.zoneout else "",
                 f"dropout-{'-'.join(self.recurrent_dropout)}" if self.recurrent_dropout else ""]
        return "_".join(p for p in parts if p)


class Rates(NamedTuple):
    """The rates, per state, of a layer's zoneout and recurrent dropout (only nonzero
    ones are kept)."""

    zoneout: dict
    recurrent_dropout: dict

    @classmethod
    def resolve(cls, cell, zoneout=0.0, recurrent_dropout=0.0) -> "Rates":
        """Rates for `cell` (a generated module). A number applies to every state
        (zoneout) or to every state a matrix product reads (recurrent dropout, e.g. an
        LSTM's `h` and not its `c`); a dict gives rates by state name."""
        rates = []
        for what, value, default in (("zoneout", zoneout, cell.STATES),
                                     ("recurrent_dropout", recurrent_dropout,
                                      cell.MATMUL_STATES)):
            if isinstance(value, dict):
                per_state = dict(value)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                if value and not default:
                    raise ValueError(f"{what}: {cell.NAME} has no recurrent matrix product, "
                                     "so recurrent dropout has nothing to drop; use zoneout")
                per_state = {s: value for s in default}
            else:
                raise ValueError(f"{what} must be a rate or a dict of rates by state name, "
                                 f"not {value!r}")
            for state, rate in per_state.items():
                if (not isinstance(rate, (int, float)) or isinstance(rate, bool)
                        or not 0.0 <= rate < 1.0):
                    raise ValueError(f"{what} rate of {state!r} must lie in [0, 1), "
                                     f"not {rate!r}")
            rates.append({s: float(r) for s, r in per_state.items()})
        # every state named is checked, even at rate 0; only nonzero rates are kept
        Regularizers.of(*rates).check(cell.NAME, cell.STATES, cell.MATMUL_STATES)
        return cls(*({s: r for s, r in part.items() if r} for part in rates))

    @property
    def variant(self) -> Regularizers:
        return Regularizers.of(self.zoneout, self.recurrent_dropout)

    def masks(self, T: int, B: int, widths: dict, dtype, rng=None) -> dict:
        """The mask inputs of one run over [T, B] (`widths`: each state's size).

        Training (`rng` given): a zoneout mask is 1 where a unit keeps its previous
        value, with probability p, drawn per step; a dropout mask is drawn once per
        sequence, 0 with probability p and 1 / (1 - p) otherwise, the same at every
        step. Evaluation (`rng` None): zoneout masks are p, their expectation, and
        dropout masks 1. Draws go state by state in name order, so a seed replays."""
        dtype = np.dtype(dtype)
        out = {}
        for state in sorted(self.zoneout):
            p, shape = self.zoneout[state], (T, B, widths[state])
            out[naming.zoneout_mask(state)] = (np.full(shape, p, dtype) if rng is None
                                        else (rng.random(shape) < p).astype(dtype))
        for state in sorted(self.recurrent_dropout):
            p, shape = self.recurrent_dropout[state], (T, B, widths[state])
            if rng is None:
                out[naming.dropout_mask(state)] = np.ones(shape, dtype)
                continue
            keep = (rng.random(shape[1:]) >= p).astype(dtype) / dtype.type(1 - p)
            out[naming.dropout_mask(state)] = np.ascontiguousarray(np.broadcast_to(keep, shape))
        return out
