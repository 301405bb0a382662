"""Compile every CUDA kernel of the given specs to PTX for an H200 (sm_90) through
numba-cuda's real compiler (NVVM), without a GPU; print one JSON line per kernel.

Run as a process of its own (`tests/test_cuda_ptx.py`): the simulator must be off,
and numba-cuda asks the current device for its compute capability when it compiles a
device function, so that question gets the H200's answer here.
"""
from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
import types
from pathlib import Path

os.environ["NUMBA_ENABLE_CUDASIM"] = "0"
import numba as nb  # noqa: E402
import numba.cuda.dispatcher  # noqa: E402
from numba import cuda  # noqa: E402

from cellc import naming  # noqa: E402
from cellc.backend.numba.printer import _grouped  # noqa: E402
from cellc.driver import compile_spec  # noqa: E402
from cellc.runtime.loader import import_file  # noqa: E402

CC = (9, 0)
numba.cuda.dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=CC)
DOUBLE = re.compile(r"\.f64\b|%fd\d")       # a double-precision instruction or register


def signature(f, kernel, real):
    """The kernel's argument types, grouped as its launcher passes them (the printer's
    `_grouped`): rows and sizes int64, vectors 1-D, blocks 2-D (any layout), a kernel's
    global scratch 3-D."""
    ranks = {naming.GROUPS["vectors"]: 1, naming.GROUPS["reads"]: 2, naming.GROUPS["writes"]: 2}
    args = []
    for name, members in _grouped((p, p.name) for p in f.params):
        if isinstance(members, tuple):
            args.append(nb.types.UniTuple(nb.types.Array(real, ranks[name], "A"), len(members)))
        else:
            args.append(nb.types.int64)
    if naming.SCRATCH in kernel.py_func.__code__.co_varnames[:kernel.py_func.__code__.co_argcount]:
        args.append(nb.types.Array(real, 3, "A"))
    return nb.types.void(*args)


def nvvm_missing() -> str | None:
    """Why no PTX can be made here (no NVVM or NVRTC library), or None."""
    def probe(a):
        a[0] = 1
    try:
        cuda.compile_ptx(probe, "void(float32[:])", cc=CC)
    except Exception as err:          # numba-cuda's own errors for a missing toolkit vary
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None


def main(specs, dtypes):
    missing = nvvm_missing()
    if missing:
        print(json.dumps({"skip": missing}))
        return
    folder = Path(tempfile.mkdtemp(prefix="cellc-ptx-"))
    for spec in specs:
        irs = compile_spec(spec, target="cuda")
        path = folder / f"{irs.cell.name}_cuda.py"
        path.write_bytes(irs.source.encode("utf-8"))
        module = import_file(path, f"{irs.cell.name}_cuda")
        for f in irs.program.functions:
            if f.kind != "kernel":
                continue
            kernel = getattr(module, naming.device_kernel(f.name))
            for dtype in dtypes:
                real = getattr(nb.types, dtype)
                t0 = time.perf_counter()
                ptx, _ = cuda.compile_ptx(kernel.py_func, signature(f, kernel, real), cc=CC)
                print(json.dumps({"spec": irs.cell.name, "kernel": f.name, "dtype": dtype,
                                  "seconds": round(time.perf_counter() - t0, 2),
                                  "doubles": len(DOUBLE.findall(ptx)), "ptx_lines": ptx.count("\n")}),
                      flush=True)


if __name__ == "__main__":
    main(sys.argv[2:], sys.argv[1].split(","))
