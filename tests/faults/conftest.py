"""Fixtures of the fault-injection suite: every part a real process the test can break."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.faults.stack import FAULT_WORKER_SETTINGS, GatewayProcess, write_jwks
from tests.support import RedisServer, StartedWorkers


@pytest.fixture
def fault_redis(tmp_path: Path):
    """A private Redis this test may kill, restart and pause (append-only: nothing is lost)."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(workdir)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def fault_client(fault_redis) -> AsyncIterator[Redis]:
    """A client of the private Redis, for the test's own reads and writes."""
    client = Redis.from_url(fault_redis.url)
    yield client
    await client.aclose()


@pytest.fixture
def jwks_file(tmp_path: Path, signing_key) -> str:
    """The test issuer's JWKS as a file:// URL: no server on the test's loop is needed."""
    return write_jwks(tmp_path / "jwks.json", [signing_key])


@pytest.fixture
async def start_gateway(tmp_path: Path, fault_redis, jwks_file):
    """Start real gateway processes on the private Redis; all are stopped afterwards."""
    started: list[GatewayProcess] = []

    async def start(**env: str) -> GatewayProcess:
        env = {"redis_url": fault_redis.url, "jwks_url": jwks_file, **env}
        gateway = GatewayProcess.start_with(tmp_path, **env)
        started.append(gateway)
        await gateway.ready()
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def start_worker(fault_redis, demo_model_path: Path, cache_dir: Path):
    """Start real worker processes on the private Redis (short leases); all stopped afterwards."""
    workers = StartedWorkers(
        redis_url=fault_redis.url,
        model_path=demo_model_path,
        cache_dir=cache_dir,
        **FAULT_WORKER_SETTINGS,
    )
    yield workers.start
    workers.stop_all()
