"""cellc.load(): compile from anywhere, cached by spec content and compiler version."""
import numpy as np
from conftest import ROOT

import cellc
from cellc import driver
from cellc.runtime import loader


def test_load_compiles_once_and_reuses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLC_CACHE_DIR", str(tmp_path / "cache"))
    spec = tmp_path / "my_cell.toml"
    spec.write_text((ROOT / "specs" / "elman.toml").read_text())
    module = cellc.load(spec)
    files = sorted((tmp_path / "cache").glob("*.py"))
    assert len(files) == 1 and files[0].name.startswith("elman_")
    assert cellc.load(spec) is module               # same process: memoised
    loader._LOADED.clear()

    def no_compiling(*args):
        raise AssertionError("a cache hit must not compile")
    monkeypatch.setattr(driver, "compile_bytes", no_compiling)
    again = cellc.load(spec)                        # new import from the disk cache
    assert again.__file__ == module.__file__
    params = module.init_params(I=2, H=3, dtype=np.float64)
    y, _, _ = module.forward(params, np.ones((2, 1, 2)))
    assert y.shape == (2, 1, 3)


def test_edited_spec_gets_a_new_module(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLC_CACHE_DIR", str(tmp_path / "cache"))
    spec = tmp_path / "cell.toml"
    text = (ROOT / "specs" / "elman.toml").read_text()
    spec.write_text(text)
    first = cellc.load(spec)
    spec.write_text(text.replace("tanh(", "sigmoid("))
    second = cellc.load(spec)
    assert first.__file__ != second.__file__
    assert "sigmoid" in open(second.__file__).read()


def test_fingerprint_covers_the_compiler(monkeypatch):
    before = loader.compiler_fingerprint()
    loader.compiler_fingerprint.cache_clear()
    monkeypatch.setattr(cellc, "__version__", "9.9.9")
    monkeypatch.setattr(loader, "__version__", "9.9.9")
    assert loader.compiler_fingerprint() != before
    loader.compiler_fingerprint.cache_clear()
