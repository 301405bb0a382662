"""What every benchmark prints about the machine it ran on, and how it keeps runs honest.

A figure means nothing without the CPU, its vector extensions and the BLAS kernel that ran
it (this project's machines change from one session to the next), nor without knowing
whether another process shared the cores. Every benchmark prints `describe()` first,
gives each implementation the same threads (`thread_env`), summarises samples as
(min, median, max) with `spread`, and prints `busy_warning` where the run was disturbed.
"""
from __future__ import annotations

import ctypes
import glob
import os
import platform
import statistics


def _cpuinfo(field: str) -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_name() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def vector_extensions() -> str:
    flags = set(_cpuinfo("flags").split())
    found = [name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("fma", "FMA"),
                                     ("avx", "AVX")) if flag in flags]
    return " + ".join(found) or "SSE only (or unknown)"


def has_avx512() -> bool:
    return "avx512f" in _cpuinfo("flags").split()


def blas_kernel() -> str:
    """The kernel set numpy's own OpenBLAS chose on this CPU (cellc's BLAS): Haswell,
    SkylakeX, Zen, ..."""
    import numpy as np
    for lib in glob.glob(os.path.join(os.path.dirname(np.__file__) + ".libs", "libscipy_openblas*")):
        try:
            f = ctypes.CDLL(lib).scipy_openblas_get_corename64_
        except (OSError, AttributeError):
            continue
        f.restype = ctypes.c_char_p
        return f"OpenBLAS {f().decode()}"
    return "unknown (numpy without its bundled OpenBLAS)"


def describe(threads: int | None = None) -> str:
    import numpy as np
    line = (f"{cpu_name()}, {os.cpu_count()} cores, {vector_extensions()}; numpy {np.__version__} "
            f"with {blas_kernel()} kernels")
    if threads is not None:
        line += f"; {threads} thread(s) for every library"
    return line + f"; load average {os.getloadavg()[0]:.2f} before the run"


def pin(threads: int):
    """A subprocess `preexec_fn` that keeps the worker on `threads` cores. The thread
    variables of `thread_env` do not reach every pool: with them alone, JAX's CPU client
    still ran a one-thread benchmark on both cores (CPU time 1.9x wall time)."""
    def pin_worker():
        cores = sorted(os.sched_getaffinity(0))
        if threads < len(cores):
            os.sched_setaffinity(0, cores[:threads])
    return pin_worker if hasattr(os, "sched_setaffinity") else None


def thread_env(threads: int, env: dict | None = None) -> dict:
    """The environment of a worker process whose libraries (numpy's OpenBLAS, torch's
    OpenMP, XLA's thread pool) may use `threads` threads each, and no more; run it with
    `preexec_fn=pin(threads)` as well."""
    env = dict(os.environ if env is None else env)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    if threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    return env


def spread(samples) -> dict:
    """min, median and max of the samples."""
    return {"min": min(samples), "median": statistics.median(samples), "max": max(samples)}


def busy_warning(load_before: float, cpu_s: float, wall_s: float, threads: int) -> str | None:
    """A warning when the machine was not ours alone: a load average above what the run
    itself adds, or CPU time far below wall time (the process waited for a core)."""
    cores = os.cpu_count() or 1
    notes = []
    load_after = os.getloadavg()[0]
    if max(load_before, load_after) > threads + 0.5:
        notes.append(f"load average {load_before:.2f} before, {load_after:.2f} after, "
                     f"on {cores} cores")
    if wall_s > 0 and cpu_s < 0.7 * wall_s:
        notes.append(f"CPU time {cpu_s:.3g} s for {wall_s:.3g} s of wall time")
    if not notes:
        return None
    return "WARNING: the machine was busy (" + "; ".join(notes) + "): compare ratios, not times"
