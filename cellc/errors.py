"""The one exception a user of cellc ever sees for a bad spec.

Every stage of the compiler reports problems in a spec through `SpecError`, which
carries the file, line, column, the offending symbol and a suggested fix, and
formats them as one readable paragraph. Anything else escaping the compiler is a
bug in cellc, not in the spec.
"""
from __future__ import annotations

import difflib
import os
import stat
import unicodedata

MAX_SPEC_BYTES = 256 * 1024     # a cell spec is a few dozen lines


def printable(text: str) -> str:
    """`text` safe for a terminal: control, format and separator characters (an escape
    sequence that clears the screen or retitles the window, a right-to-left override, a
    line break inside a name) are written as Python escapes instead."""
    return "".join(ch.encode("unicode_escape").decode("ascii")
                   if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn")
                   else ch for ch in str(text))


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
        """One paragraph; the spec's own text in it (its file name, a line, a name) is
        `printable`, so a spec cannot send a terminal escape sequences through an error."""
        where = _cut(printable(self.path or "<spec>"))
        if self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        text = f"{where}: error: {_cut(printable(self.message))}"
        if self.source_line is not None:
            shown = printable(self.source_line.rstrip())
            text += f"\n    {_cut(shown)}"
            if self.col is not None and self.col <= _SHOWN and len(shown) <= _SHOWN:
                text += "\n    " + " " * max(self.col - 1, 0) + "^"
        if self.fix:
            text += f"\n  fix: {_cut(printable(self.fix))}"
        return text


_SHOWN = 240        # characters of one part of a message: a spec's text in it can be long


def _cut(text: str) -> str:
    return text if len(text) <= _SHOWN else text[:_SHOWN - 30] + f"... ({len(text)} characters)"


class CacheError(OSError):
    """cellc's cache directory cannot be used; the message names CELLC_CACHE_DIR."""


def did_you_mean(name: str, candidates) -> str:
    """A ' Did you mean `x`?' hint, or '' when nothing is close."""
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return f" Did you mean `{close[0]}`?" if close else ""


def read_spec_bytes(path) -> bytes:
    """The bytes of a spec file, or a SpecError saying why it cannot be read. Only a
    regular file is read (a FIFO would block, `/dev/zero` never ends), opened without
    blocking, and never more than MAX_SPEC_BYTES + 1 bytes of it. (Here, not in
    spec.py, so that a cache hit in `cellc.load` never imports SymPy.)"""
    def refuse(why, fix="check the path"):
        raise SpecError(f"cannot read spec: {why}", path=str(path), fix=fix)

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (OSError, ValueError) as err:      # ValueError: a NUL in the path
        refuse(getattr(err, "strerror", None) or str(err))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = ("a directory" if stat.S_ISDIR(info.st_mode) else "a pipe (FIFO)"
                    if stat.S_ISFIFO(info.st_mode) else "a device" if stat.S_ISCHR(
                        info.st_mode) or stat.S_ISBLK(info.st_mode) else "not a regular file")
            refuse(f"it is {kind}", fix="give the path of a .toml spec file")
        chunks, size = [], 0
        while size <= MAX_SPEC_BYTES:
            chunk = os.read(fd, MAX_SPEC_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        refuse(err.strerror)
    finally:
        os.close(fd)
    return b"".join(chunks)
