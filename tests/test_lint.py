"""cellc's own source, the runtime every generated module carries included, passes ruff
(pyflakes, pycodestyle, import order; settings in pyproject.toml)."""
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is in the [dev] extra")
def test_cellc_passes_ruff():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "cellc"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
