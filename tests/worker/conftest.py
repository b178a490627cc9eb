"""In-process engine fixtures on the demo model (greedy, so outputs are exact)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from services.worker.settings import WorkerSettings


@pytest.fixture(scope="session")
def engine_settings(demo_model_path: Path, cache_dir: Path) -> WorkerSettings:
    """Small-cache settings for engine tests."""
    return WorkerSettings(
        model=str(demo_model_path),
        cache_dir=cache_dir,
        max_batch=8,
        cache_tokens=4096,
        block_size=32,
        max_batch_tokens=256,
        warmup=False,
    )


@pytest.fixture(scope="session")
def loaded_model(engine_settings):
    """The demo model loaded through the real loading path."""
    from services.worker.loading import load_model

    return load_model(engine_settings)


@pytest.fixture
async def engine(loaded_model, engine_settings):
    """A started engine; always stopped (its thread would hang the process otherwise)."""
    from services.worker.engine import Engine

    engine = Engine(loaded=loaded_model, settings=engine_settings)
    await engine.start()
    yield engine
    await engine.stop()


@pytest.fixture
def small_engine_settings(engine_settings):
    """Settings whose KV cache holds only 256 tokens."""
    return dataclasses.replace(engine_settings, cache_tokens=256)
