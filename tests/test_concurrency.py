"""Concurrent compiles with real processes: several processes compiling and importing
the same spec at the same moment all succeed, agree bit for bit, and leave exactly one
module and no temporary files (modules are written to a temporary file and renamed;
Numba writes its cache the same way)."""
import os
import subprocess
import sys
import time

from conftest import ROOT

WORKER = """
import hashlib, os, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
import cellc
while not os.path.exists(sys.argv[3]):      # start together
    time.sleep(0.001)
m = cellc.load(sys.argv[2])
h = hashlib.sha256()
for dtype in (np.float32, np.float64):
    p = m.init_params(dtype=dtype, seed=1, I=5, H=7)
    x = np.random.default_rng(2).normal(size=(9, 3, 5)).astype(dtype)
    y, final, cache = m.forward(p, x)
    g = m.backward(cache, np.ones_like(y))
    for a in [y, *final.values(), *g.params.values(), *g.inputs.values()]:
        h.update(a.tobytes())
print(os.path.basename(m.__file__), h.hexdigest())
"""


def start(spec, go, env):
    return subprocess.Popen([sys.executable, "-c", WORKER, str(ROOT), str(spec), str(go)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_processes_compiling_one_spec_at_once(tmp_path):
    spec = tmp_path / "racing.toml"
    spec.write_text((ROOT / "specs" / "gru.toml").read_text().replace('name = "gru"',
                                                                       'name = "racing"'))
    env = dict(os.environ, CELLC_CACHE_DIR=str(tmp_path / "cache"))
    go = tmp_path / "go"
    workers = [start(spec, go, env) for _ in range(4)]
    time.sleep(1.0)                     # all are waiting at the line
    go.touch()
    results = [w.communicate(timeout=600) for w in workers]
    for w, (out, err) in zip(workers, results):
        assert w.returncode == 0, err[-3000:]
    lines = {out.strip() for out, _ in results}
    assert len(lines) == 1, lines       # one module, identical answers
    cache = tmp_path / "cache"
    assert len(list(cache.glob("*.py"))) == 1
    assert not [p for p in cache.rglob("*") if p.name.endswith(".tmp")]
    later = start(spec, go, env)        # a later process hits the cache
    out, err = later.communicate(timeout=600)
    assert later.returncode == 0, err[-3000:]
    assert out.strip() in lines


def test_cellc_compile_racing_into_one_directory(tmp_path):
    out = tmp_path / "out"
    specs = [str(p) for p in sorted((ROOT / "specs").glob("*.toml"))]
    runs = [subprocess.Popen([sys.executable, "-m", "cellc", "compile", *specs, "-o", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=ROOT) for _ in range(3)]
    for r in runs:
        _, err = r.communicate(timeout=600)
        assert r.returncode == 0, err[-3000:]
    for path in (ROOT / "generated").glob("*.py"):
        assert (out / path.name).read_text() == path.read_text(), path.name
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
