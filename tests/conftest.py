import os
import sys
from pathlib import Path

import pytest

# The CUDA target's tests run in Numba's CUDA simulator unless CELLC_TEST_GPU=1 asks for
# a real GPU; the switch is read when numba.cuda is first imported, so it is set here.
if os.environ.get("CELLC_TEST_GPU") != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
SPECS = sorted((ROOT / "specs").glob("*.toml"))


def _one_input(path) -> bool:
    from cellc.frontend.spec import read_spec
    return len(read_spec(path).inputs) == 1


# The specs of one input, `x`: what a layer runs (cellc.layers.Layer feeds one input
# per step), and what the contract's tests are written for. Cells with a time stamp
# beside x are tested as modules everywhere else (kernels, lengths, cell library).
ONE_INPUT_SPECS = [s for s in SPECS if _one_input(s)]


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """cellc.load() caches under a per-run directory, never the user's ~/.cache."""
    os.environ["CELLC_CACHE_DIR"] = str(tmp_path_factory.mktemp("cellc-cache"))
