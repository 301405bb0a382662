"""The one exception a user of cellc ever sees for a bad spec.

Every stage of the compiler reports problems in a spec through `SpecError`, which
carries the file, line, column, the offending symbol and a suggested fix, and
formats them as one readable paragraph. Anything else escaping the compiler is a
bug in cellc, not in the spec.
"""
from __future__ import annotations

import difflib
from pathlib import Path


class SpecError(ValueError):
    """A spec file is malformed. `str(err)` is a complete, user-facing message."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 col: int | None = None, symbol: str | None = None, fix: str | None = None,
                 source_line: str | None = None):
        self.message = message
        self.path = path
        self.line = line
        self.col = col
        self.symbol = symbol
        self.fix = fix
        self.source_line = source_line
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.path or "<spec>"
        if self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        text = f"{where}: error: {self.message}"
        if self.source_line is not None:
            text += f"\n    {self.source_line.rstrip()}"
            if self.col is not None:
                text += "\n    " + " " * max(self.col - 1, 0) + "^"
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


def did_you_mean(name: str, candidates) -> str:
    """A ' Did you mean `x`?' hint, or '' when nothing is close."""
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return f" Did you mean `{close[0]}`?" if close else ""


def read_spec_bytes(path) -> bytes:
    """The bytes of a spec file, or a SpecError saying why it cannot be read. (Here,
    not in spec.py, so that a cache hit in `cellc.load` never imports SymPy.)"""
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise SpecError(f"cannot read spec: {err.strerror}", path=str(path),
                        fix="check the path") from None
