"""A generated module imported under two names (as `pkg.cell` and, from its directory,
as `cell`) works under both: Numba's disk cache records the first module name and
would import it again to load (numba#7075), so the second name runs without it."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = """
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
import importlib
m = importlib.import_module(sys.argv[2])
p = m.init_params(dtype=np.float64, seed=0, I=3, H=4)
x = np.random.default_rng(0).normal(size=(5, 2, 3))
y, _, cache = m.forward(p, x)
g = m.backward(cache, np.ones_like(y))
print(repr(float(y.sum())), repr(float(g.params["W_x"].sum())), m._JIT["cache"])
"""


def run(where, name):
    out = subprocess.run([sys.executable, "-c", RUN, str(where), name], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_module_imported_under_two_names(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    shutil.copy(ROOT / "generated" / "elman.py", package / "elman.py")
    first = run(tmp_path, "pkg.elman")          # fills the cache, owns it
    again = run(tmp_path, "pkg.elman")          # a cache hit
    other = run(package, "elman")               # the same file, another name
    assert first[:2] == again[:2] == other[:2]
    assert first[2] == again[2] == "True" and other[2] == "False"
    assert (package / "__pycache__" / "elman.cellc-owner").read_text() == "pkg.elman"
    assert list((package / "__pycache__").glob("*.nbi"))      # Numba did cache
