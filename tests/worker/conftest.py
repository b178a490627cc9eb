"""Engine fixtures on the demo model (greedy: exact outputs); a private Redis; real workers."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from services.worker.settings import WorkerSettings
from tests.support import RedisServer, StartedWorkers, WorkerProcess


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


@pytest.fixture(params=["transformers", "static"])
def backend(request: pytest.FixtureRequest) -> str:
    """Engine tests run on both engines (``TINYLLAMA_ENGINE``)."""
    return request.param


@pytest.fixture
def make_engine(loaded_model, backend):
    """Build (not start) an engine of this test's backend with the given settings."""
    from services.worker.backends import build_engine

    def make(settings: WorkerSettings):
        return build_engine(
            loaded=loaded_model, settings=dataclasses.replace(settings, engine=backend)
        )

    return make


@pytest.fixture
async def engine(make_engine, engine_settings):
    """A started engine; always stopped (its thread would hang the process otherwise)."""
    engine = make_engine(engine_settings)
    await engine.start()
    yield engine
    await engine.stop()


@pytest.fixture
def small_engine_settings(engine_settings):
    """Settings whose KV cache holds only 256 tokens."""
    return dataclasses.replace(engine_settings, cache_tokens=256)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis of this test's own, which it may kill and start again."""
    server = RedisServer(tmp_path / "redis")
    server.workdir.mkdir()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A client of the private Redis (it reconnects by itself after a restart)."""
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
def start_worker(
    redis_server: RedisServer, demo_model_path: Path, cache_dir: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real worker processes on the private Redis (INFO logs); all stop at teardown."""
    workers = StartedWorkers(
        redis_url=redis_server.url,
        model_path=demo_model_path,
        cache_dir=cache_dir,
        TINYLLAMA_LOG_LEVEL="INFO",
    )
    yield workers.start
    workers.stop_all()
