"""The CUDA target (`target="cuda"`), run in Numba's CUDA simulator (conftest.py sets
NUMBA_ENABLE_CUDASIM=1; CELLC_TEST_GPU=1 runs the same tests on a GPU).

Every shipped spec is compiled for CUDA, its bytes written and imported as Python does,
and run at tiny sizes over device arrays (`numba.cuda.to_device`), float32 and float64,
forward and backward, against the NumPy interpreter; ragged batches and the forward that
saves nothing against the CPU module. Kernels compile to PTX for an H200 (sm_90) through
the real CUDA compiler where NVVM is installed (`test_cuda_ptx.py`).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
from cellcheck import all_sizes, problem, rel_err, upstream
from conftest import SPECS

from cellc.driver import compile_spec
from cellc.reference import interpreter
from cellc.runtime.loader import import_file

pytestmark = pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None,
                                reason="numba-cuda is not installed (pip install cellc[cuda])")
SIZES = {"H": 4, "I": 3}
_BUILT: dict = {}


def cuda_module(spec: Path, tmp_path_factory):
    """The CUDA module of a spec, its bytes written and imported (once per session)."""
    if spec not in _BUILT:
        irs = compile_spec(spec, target="cuda")
        path = tmp_path_factory.mktemp("cuda") / f"{irs.cell.name}_cuda.py"
        path.write_bytes(irs.source.encode("utf-8"))
        _BUILT[spec] = import_file(path, f"{irs.cell.name}_cuda"), irs.cell
    return _BUILT[spec]


def on_device(arrays: dict) -> dict:
    from numba import cuda
    return {k: cuda.to_device(v) for k, v in arrays.items()}


def on_host(arrays: dict) -> dict:
    return {k: v.copy_to_host() for k, v in arrays.items()}


def test_simulator_is_on():
    """These tests run the simulator unless a GPU run was asked for."""
    from numba import cuda
    assert cuda.is_available() and (type(cuda.to_device(np.zeros(1))).__name__ == "FakeCUDAArray") \
        == (os.environ.get("CELLC_TEST_GPU") != "1")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_matches_interpreter(spec, dtype, tmp_path_factory):
    module, cell = cuda_module(spec, tmp_path_factory)
    assert module.TARGET == "cuda"
    params, inputs, states = problem(module, T=3, B=2, sizes=SIZES, dtype=dtype, seed=3)
    host_params = on_host(params)
    x = on_device(inputs)
    y, final, cache = module.forward(params, x if len(x) > 1 else next(iter(x.values())),
                                     on_device(states))
    y, final = y.copy_to_host(), on_host(final)
    dy, ds = upstream(module, y, final, which="both", seed=3)
    from numba import cuda
    grads = module.backward(cache, cuda.to_device(dy), on_device(ds))
    y_ref, final_ref, tape = interpreter.forward(cell, host_params, inputs, states)
    dp, dx, d0 = interpreter.backward(cell, tape, dy, ds)
    got = {"outputs": (y, y_ref)}
    got.update({f"final {k}": (final[k], final_ref[k]) for k in final_ref})
    got.update({f"d {k}": (grads.params[k].copy_to_host(), dp[k]) for k in dp})
    got.update({f"d {k}": (grads.inputs[k].copy_to_host(), dx[k]) for k in dx})
    got.update({f"d {k}0": (grads.states[k].copy_to_host(), d0[k]) for k in d0})
    bound = 2e-5 if dtype == np.float32 else 1e-10
    errors = {k: rel_err(a, b) for k, (a, b) in got.items()}
    assert max(errors.values()) < bound, errors
    assert all(a.dtype == dtype for a, _ in got.values())
    assert set(grads.params) == set(module.PARAMS)


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_ragged_and_inference_match_cpu(spec, tmp_path_factory):
    """With lengths (sorted, padded, each sequence's own final states) and with
    need_grad=False, the CUDA module gives what the CPU module gives."""
    from cellcheck import generated
    module, _ = cuda_module(spec, tmp_path_factory)
    cpu, _ = generated(spec)
    T, B = 4, 3
    params, inputs, states = problem(cpu, T=T, B=B, sizes=SIZES, dtype=np.float64, seed=5)
    lengths = np.array([2, 4, 0])
    pick = (lambda d: d) if len(inputs) > 1 else (lambda d: next(iter(d.values())))
    y, final, cache = cpu.forward(params, pick(inputs), states, lengths=lengths)
    dy, ds = upstream(cpu, y, final, which="both", seed=5)
    grads = cpu.backward(cache, dy, ds)
    from numba import cuda
    gy, gfinal, gcache = module.forward(on_device(params), pick(on_device(inputs)),
                                        on_device(states), lengths=cuda.to_device(lengths))
    ggrads = module.backward(gcache, cuda.to_device(dy), on_device(ds))
    assert rel_err(gy.copy_to_host(), y) < 1e-12
    for k in final:
        assert rel_err(gfinal[k].copy_to_host(), final[k]) < 1e-12, k
    for group in ("params", "inputs", "states"):
        for k, v in getattr(grads, group).items():
            assert rel_err(getattr(ggrads, group)[k].copy_to_host(), v) < 1e-10, (group, k)
    iy, ifinal, none = module.forward(on_device(params), pick(on_device(inputs)), on_device(states),
                                      lengths=lengths, need_grad=False)
    assert none is None
    assert rel_err(iy.copy_to_host(), y) < 1e-12
    for k in final:
        assert rel_err(ifinal[k].copy_to_host(), final[k]) < 1e-12, k


def test_init_params_match_cpu(tmp_path_factory):
    from cellcheck import generated
    spec = next(s for s in SPECS if s.stem == "lstm")
    module, _ = cuda_module(spec, tmp_path_factory)
    cpu, _ = generated(spec)
    sizes = all_sizes(cpu, {"H": 5, "I": 2})
    for k, v in cpu.init_params(seed=4, **sizes).items():
        got = module.init_params(seed=4, **sizes)[k].copy_to_host()
        assert got.dtype == v.dtype and np.array_equal(got, v), k


def test_bad_arguments_get_clear_errors(tmp_path_factory):
    spec = next(s for s in SPECS if s.stem == "gru")
    module, _ = cuda_module(spec, tmp_path_factory)
    params = module.init_params(I=3, H=4)
    from numba import cuda
    x = np.zeros((2, 2, 3), np.float32)
    with pytest.raises(ValueError, match="must be a CUDA array"):
        module.forward(params, x)
    with pytest.raises(ValueError, match=r"params\[.W_xr.\] must be a CUDA array"):
        module.forward({k: v.copy_to_host() for k, v in params.items()}, cuda.to_device(x))
    with pytest.raises(ValueError, match="dtype float64 but the parameters are float32"):
        module.forward(params, cuda.to_device(x.astype(np.float64)))
    with pytest.raises(ValueError, match="size I is 5"):
        module.forward(params, cuda.to_device(np.zeros((2, 2, 5), np.float32)))
    with pytest.raises(ValueError, match="lengths must lie"):
        module.forward(params, cuda.to_device(x), lengths=np.array([3, 1]))
    with pytest.raises(ValueError, match="need_grad=False"):
        module.backward(None)


def test_gpu_benchmark_check_runs_here(tmp_path_factory):
    """benchmarks/gpu.py's correctness check, run in the simulator over Numba device
    arrays (on a GPU it runs over torch tensors): it finds the CUDA module right, and a
    wrong answer would show as a large error."""
    import sys

    from conftest import ROOT
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu
    from cellcheck import generated
    from numba import cuda
    spec = next(s for s in SPECS if s.stem == "peephole_lstm")
    module, cell = cuda_module(spec, tmp_path_factory)
    cpu, _ = generated(spec)
    errors = gpu.check("peephole_lstm", module, cpu, cell, cuda.to_device, lambda a: a.copy_to_host())
    assert errors["float64"] < 1e-10 and errors["float32"] < 1e-5, errors

    class Wrong:           # the same module with outputs off by a little
        def __getattr__(self, name):
            return getattr(module, name)

        def forward(self, *args, **kwargs):
            y, final, cache = module.forward(*args, **kwargs)
            return cuda.to_device(y.copy_to_host() * 1.001), final, cache
    assert gpu.check("peephole_lstm", Wrong(), cpu, cell, cuda.to_device,
                     lambda a: a.copy_to_host())["float64"] > 1e-4


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_torch_path_matches_cpu(spec, tmp_path_factory):
    """Over torch tensors (in the simulator torch's CPU tensors stand for CUDA tensors;
    the kernels see NumPy views of them), the drivers' torch path (cuBLAS through torch.mm,
    index_select for ragged batches, torch's slicing and fills) gives what the CPU module
    gives, float32, with lengths, and returns torch tensors."""
    torch = pytest.importorskip("torch")
    from cellcheck import generated
    module, _ = cuda_module(spec, tmp_path_factory)
    cpu, _ = generated(spec)
    params, inputs, states = problem(cpu, T=3, B=3, sizes=SIZES, dtype=np.float32, seed=7)
    lengths = np.array([3, 1, 2])
    pick = (lambda d: d) if len(inputs) > 1 else (lambda d: next(iter(d.values())))
    y, final, cache = cpu.forward(params, pick(inputs), states, lengths=lengths)
    dy, ds = upstream(cpu, y, final, which="both", seed=7)
    grads = cpu.backward(cache, dy, ds)

    def tensors(d):
        return {k: torch.from_numpy(v.copy()) for k, v in d.items()}
    ty, tfinal, tcache = module.forward(tensors(params), pick(tensors(inputs)), tensors(states),
                                        lengths=torch.from_numpy(lengths))
    tgrads = module.backward(tcache, torch.from_numpy(dy), tensors(ds))
    assert isinstance(ty, torch.Tensor) and ty.dtype == torch.float32
    assert rel_err(ty.numpy(), y) < 1e-5
    for k in final:
        assert rel_err(tfinal[k].numpy(), final[k]) < 1e-5, k
    for group in ("params", "inputs", "states"):
        for k, v in getattr(grads, group).items():
            got = getattr(tgrads, group)[k]
            assert isinstance(got, torch.Tensor) and tuple(got.shape) == v.shape, (group, k)
            assert rel_err(got.numpy(), v) < 1e-4, (group, k)
    iy, _, _ = module.forward(tensors(params), pick(tensors(inputs)), tensors(states), need_grad=False)
    y_full, _, _ = cpu.forward(params, pick(inputs), states, need_grad=False)
    assert rel_err(iy.numpy(), y_full) < 1e-5


@pytest.mark.parametrize("spec,options", [
    ("lstm", dict(num_layers=2, bidirectional=True, batch_first=True)),
    ("gru", dict(num_layers=2, dropout=0.25, zoneout=0.1)),
    ("phased_lstm", dict(num_layers=1, bidirectional=True)),
], ids=["lstm", "gru", "phased_lstm"])
def test_layers_and_torch_rnn_on_the_cuda_target(spec, options, monkeypatch):
    """`Layer(target="cuda")` and `cellc.torch.RNN` on CUDA tensors: the layer and the
    operators as they run on a GPU, with torch's CPU tensors standing for CUDA tensors
    (the simulator's kernels see them as NumPy arrays). The operators' one device switch
    (`_on_gpu`) is pointed at the CUDA target; the outputs and every gradient
    must equal the CPU target's, in training (dropout, zoneout) and with packed sequences."""
    torch = pytest.importorskip("torch")
    import cellc.torch
    from cellc.runtime import torch_ops
    path = next(s for s in SPECS if s.stem == spec)
    extra = ["t"] if spec == "phased_lstm" else []
    torch.manual_seed(0)
    rnn = cellc.torch.RNN(path, 3, 4, dtype=torch.float64, **options)
    B, T = 3, 5
    x = torch.randn((B, T, 3) if options.get("batch_first") else (T, B, 3), dtype=torch.float64)
    stamps = {k: torch.rand(x.shape[:2] + (1,), dtype=torch.float64) * 10 for k in extra}

    def run():
        rnn.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        torch.manual_seed(1)
        y, finals = rnn(xi, **stamps)
        finals = finals if isinstance(finals, tuple) else (finals,)
        (y.square().sum() + sum(f.sum() for f in finals)).backward()
        return [y.detach(), *[f.detach() for f in finals], xi.grad,
                *[p.grad for p in rnn.parameters()]]
    want = run()
    layer = torch_ops._LAYERS[rnn._key]
    monkeypatch.setattr(torch_ops, "_on_gpu", lambda t: True)
    got = run()
    assert layer.on("cuda").target == "cuda" and layer.on("cuda").cell.TARGET == "cuda"
    for a, b in zip(got, want):
        assert rel_err(a.numpy(), b.numpy()) < 1e-10


def test_gpu_benchmark_dry_run(tmp_path):
    """benchmarks/gpu.py runs end to end without a GPU (`--dry-run`: the simulator, torch's
    CPU tensors), so that the run on a GPU is not the first: its checks pass and every
    implementation asked for is timed, and it says that no figure measures a GPU."""
    import json
    import subprocess
    import sys

    from conftest import ROOT
    out = tmp_path / "gpu.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--dry-run",
                          "--cells", "lstm,gru", "--sizes", "3x4x3", "--rounds", "1",
                          "--impls", "cellc,cudnn,loop", "--out", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "no figure above measures a GPU" in run.stdout
    results = json.loads(out.read_text())
    assert all(c["ok"] for c in results["checks"].values() if "ok" in c), results["checks"]
    assert results["checks"]["torch.RNN"]["rnn_vs_nn_lstm"] < 1e-10
    assert {r["cell"] for r in results["timings"]} == {"lstm", "gru"}
    for r in results["timings"]:
        assert {"cellc train", "cellc forward", "cudnn train", "loop forward"} <= set(r), r


def test_every_cuda_module_carries_its_runtime_verbatim():
    """generated/cuda/ holds the CUDA runtime as `cuda/runtime.py` and `shared_runtime.py`
    write it (the code both targets share placed at its line), and no relative import."""
    from conftest import ROOT

    from cellc.backend.cuda import module
    text = module.runtime_source()
    assert "def _validate(" in text and "def _row_sum(" in text and "from .." not in text
    paths = sorted((ROOT / "generated" / "cuda").glob("*.py"))
    assert len(paths) == len(SPECS) + 1
    for path in paths:
        if path.name != "__init__.py":
            assert text in path.read_text(encoding="utf-8"), path.name


def test_load_caches_each_target_apart(tmp_path, monkeypatch):
    """`cellc.load(spec, target=...)`: one cached module per target, the CUDA one marked
    as such; an unknown target is refused. (A cache of its own, and the process's memo
    left as it was for the other tests.)"""
    import cellc
    from cellc.runtime import loader
    monkeypatch.setenv("CELLC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(loader, "_LOADED", {})
    spec = next(s for s in SPECS if s.stem == "elman")
    gpu, cpu = cellc.load(spec, target="cuda"), cellc.load(spec)
    assert gpu.TARGET == "cuda" and not hasattr(cpu, "TARGET")
    assert gpu is cellc.load(spec, target="cuda") and gpu is not cpu
    assert gpu.SPEC_SHA256 == cpu.SPEC_SHA256 and gpu.PARAMS == cpu.PARAMS
    files = sorted(p.name for p in tmp_path.glob("*.py"))
    assert len(files) == 2 and [f.startswith("elman_cuda_") for f in files].count(True) == 1, files
    with pytest.raises(ValueError, match="unknown target 'tpu'"):
        cellc.load(spec, target="tpu")
