import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
SPECS = sorted((ROOT / "specs").glob("*.toml"))


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """cellc.load() caches under a per-run directory, never the user's ~/.cache."""
    os.environ["CELLC_CACHE_DIR"] = str(tmp_path_factory.mktemp("cellc-cache"))
