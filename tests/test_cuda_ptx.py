"""Every CUDA kernel of every shipped spec compiles to PTX for an NVIDIA H200 (sm_90)
through numba-cuda's real compiler, without a GPU (`cuda_ptx.py`, in a process of its
own with the simulator off), and a float32 kernel holds no double-precision instruction:
a literal that promoted to float64 would halve its speed on a GPU. Skipped where NVVM
is not installed (the `nvidia-cuda-nvcc-cu12` and `nvidia-cuda-nvrtc-cu12` wheels of the
dev extra bring it)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SPECS

pytestmark = pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None,
                                reason="numba-cuda is not installed (pip install cellc[cuda])")


@pytest.mark.parametrize("half", [0, 1])
def test_kernels_compile_to_ptx_without_doubles_in_float32(half):
    specs = SPECS[half::2]
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    run = subprocess.run([sys.executable, str(Path(__file__).with_name("cuda_ptx.py")),
                          "float32,float64", *map(str, specs)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    if rows and "skip" in rows[0]:
        pytest.skip(f"no NVVM here: {rows[0]['skip']}")
    compiled = {(r["spec"], r["kernel"], r["dtype"]): r for r in rows}
    assert {spec for spec, _, _ in compiled} == {s.stem for s in specs}
    for (spec, kernel, dtype), r in compiled.items():
        assert r["ptx_lines"] > 0
        if dtype == "float32":
            assert r["doubles"] == 0, f"{spec} {kernel}: float32 PTX uses doubles"
        else:
            assert r["doubles"] > 0, f"{spec} {kernel}: the check finds no doubles in float64"
    assert {d for _, _, d in compiled} == {"float32", "float64"}
