"""`cellc.load(spec)`: compile a spec from anywhere and import it, cached on disk.

The cache key hashes the spec's bytes, the cellc version and cellc's own source, so an
edited spec or an upgraded compiler never reuses a stale module. Modules are written
atomically (temporary file + rename), so concurrent processes never import a
half-written file; Numba's on-disk cache sits beside each module.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from functools import lru_cache
from pathlib import Path

from .. import __version__
from ..errors import CacheError, read_spec_bytes
from .regularizers import Regularizers


def cache_dir() -> Path:
    root = os.environ.get("CELLC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cellc")
    return Path(root)


@lru_cache(maxsize=1)
def compiler_fingerprint() -> str:
    """Hash of cellc's version and its own source files (templates included)."""
    h = hashlib.sha256(__version__.encode())
    package = Path(__file__).parent.parent
    for f in sorted(package.rglob("*")):
        if f.suffix in (".py", ".j2") and "__pycache__" not in f.parts:
            h.update(f.relative_to(package).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


_LOADED: dict[str, object] = {}


def load(spec: str | os.PathLike, *, zoneout=(), recurrent_dropout=(), target: str = "cpu"):
    """Compile the spec file (if not cached) and return the imported module.

    `zoneout` and `recurrent_dropout` name states: the module is then the cell's variant
    with those regularizers' masks as extra inputs (see `passes/regularize.py`);
    `cellc.layers.Layer` draws the masks for you. `target="cuda"` gives the module of
    the CUDA target (numba-cuda; see the README's "The CUDA target")."""
    regularizers = Regularizers.of(zoneout, recurrent_dropout)
    if target not in ("cpu", "cuda"):
        raise ValueError(f"unknown target {target!r}; cellc compiles for 'cpu' or 'cuda'")
    if target == "cuda" and importlib.util.find_spec("numba_cuda") is None:
        raise ImportError("cellc's CUDA target runs on numba-cuda, which is not installed: "
                          "pip install 'cellc[cuda]' (and torch or CuPy for the GEMMs)")
    return _load(read_spec_bytes(spec), str(spec), regularizers, target)


def variant(module, regularizers: Regularizers):
    """The variant of a compiled cell (a generated module) with the given regularizers,
    compiled from the spec the module carries (`SPEC_SOURCE`), cached like `load`
    (`passes.regularize` refuses states the cell does not have or cannot drop)."""
    if not regularizers:
        return module
    return _load(module.SPEC_SOURCE.encode("utf-8"), f"{module.NAME}.toml", regularizers,
                 getattr(module, "TARGET", "cpu"))


def spec_of(module) -> tuple:
    """What rebuilds a compiled cell in another process: its name, the spec it was
    compiled from, and its regularizers (see `from_spec`)."""
    regularizers = getattr(module, "REGULARIZERS", {})
    return module.NAME, module.SPEC_SOURCE, tuple(sorted(regularizers.items()))


def from_spec(name: str, source: str, regularizers: tuple = (), target: str = "cpu"):
    """The compiled cell `spec_of` described: the module already imported in this
    process if there is one (a copy shares it), else compiled or read from the cache."""
    wanted = dict(regularizers)
    for module in list(sys.modules.values()):
        if (getattr(module, "SPEC_SOURCE", None) == source
                and getattr(module, "REGULARIZERS", {}) == wanted
                and getattr(module, "TARGET", "cpu") == target
                and callable(getattr(module, "forward", None))):
            return module
    return _load(source.encode("utf-8"), f"{name}.toml", Regularizers.of(**wanted), target)


def for_target(module, target: str):
    """The same compiled cell (spec and regularizers) for another target."""
    name, source, regularizers = spec_of(module)
    return from_spec(name, source, regularizers, target)


def _load(raw: bytes, path: str, regularizers: Regularizers, target: str = "cpu"):
    key = hashlib.sha256(raw + b"\0" + compiler_fingerprint().encode() + b"\0"
                         + regularizers.tag().encode()
                         + (b"" if target == "cpu" else b"\0" + target.encode())).hexdigest()[:20]
    if key in _LOADED:
        return _LOADED[key]
    directory = cache_dir()
    try:
        existing = sorted(directory.glob(f"*_{key}.py")) if directory.exists() else []
        found = next((f for f in existing if intact(f)), None)
        if found is None:       # not cached, or cut short, emptied or edited: build it again
            from ..driver import compile_bytes, write_module  # SymPy only on a miss
            compiled = compile_bytes(raw, path, regularizers, target)
            tag = regularizers.tag()[:40]      # the key tells variants apart; the name reads
            stem = "_".join(p for p in (compiled.cell.name, tag, "" if target == "cpu" else target, key)
                            if p)
            found = directory / f"{stem.replace('-', '_')}.py"
            write_module(found, sealed(compiled.source))
    except OSError as err:
        raise CacheError(f"cellc's cache directory {directory} is not usable: "
                         f"{err.strerror or err}. Set CELLC_CACHE_DIR to a writable "
                         "directory (or XDG_CACHE_HOME)") from err
    module = import_file(found, f"cellc_cache.{found.stem}")
    _LOADED[key] = module
    return module


_SEAL = b"# cellc cache: sha256 "


def sealed(source: str) -> str:
    """A module for the cache, with a last line that hashes everything above it."""
    source = source if source.endswith("\n") else source + "\n"
    return source + _SEAL.decode() + hashlib.sha256(source.encode()).hexdigest() + "\n"


def intact(path: Path) -> bool:
    """Whether the cached module at `path` is whole, as written (see `sealed`)."""
    if not path.is_file():          # a FIFO or a directory in its place is not ours
        return False
    data = path.read_bytes()
    body, _, seal = data[:-1].rpartition(b"\n")
    return (data.endswith(b"\n") and seal.startswith(_SEAL)
            and seal[len(_SEAL):] == hashlib.sha256(body + b"\n").hexdigest().encode())


def import_file(path: Path, module_name: str):
    """Import a generated module from its file (so tracebacks, inspect and Numba's
    cache all see a real file)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
