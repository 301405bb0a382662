"""The benchmarks' own machinery: a bound that did not do the GEMMs it claims, or a
thread pinning that did not pin, would make every ratio it prints wrong."""
import sys
from pathlib import Path

import numpy as np

from cellc.frontend.spec import read_spec
from cellc.passes import schedule, split

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bound  # noqa: E402
import machine  # noqa: E402


def test_the_bound_makes_the_cells_gemms():
    """The LSTM's GEMMs are its input projection (I x 4H, hoisted) and its recurrent one
    (H x 4H, per step); the compiled bound computes each product it claims."""
    import generated.lstm as lstm
    plan = schedule(split(read_spec(ROOT / "specs" / "lstm.toml")))
    sizes = {"I": 5, "H": 3}
    assert sorted(bound.gemm_shapes(plan, sizes)) == [("static", 5, 12), ("step", 3, 12)]
    b = bound.make_bound(lstm, plan, sizes, B=4, T=6)
    b.train()
    assert sorted(g["kind"] for g in b.gemms) == ["static", "step"]
    for g in b.gemms:
        X, W, M, dM = g["X"], g["W"], g["M"], g["dM"]
        np.testing.assert_allclose(M, X @ W, rtol=1e-5, atol=1e-5)
        rows = X.shape[0] * X.shape[1]
        np.testing.assert_allclose(g["dW"], X.reshape(rows, -1).T @ dM.reshape(rows, -1),
                                   rtol=1e-4, atol=1e-4)
    assert bound.train_flops(plan, sizes, 4, 6) == 3 * 2 * 6 * 4 * (5 * 12 + 3 * 12)


def test_every_library_gets_the_same_threads():
    env = machine.thread_env(1, {})
    assert env["OPENBLAS_NUM_THREADS"] == env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    assert "XLA_FLAGS" not in machine.thread_env(2, {})


def test_a_one_thread_worker_runs_on_one_core():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", "import os; print(len(os.sched_getaffinity(0)))"],
                         capture_output=True, text=True, check=True, preexec_fn=machine.pin(1))
    assert out.stdout.strip() == "1"


def test_the_machine_is_named_and_a_busy_run_is_reported():
    text = machine.describe(2)
    assert machine.cpu_name() in text and "OpenBLAS" in text and "load average" in text
    quiet = machine.busy_warning(0.0, 1.0, 1.0, 1)     # the load average is the machine's own
    assert quiet is None or "load average" in quiet
    assert "CPU time" in machine.busy_warning(0.0, 0.2, 1.0, 1)
    assert machine.spread([3, 1, 2]) == {"min": 1, "median": 2, "max": 3}
