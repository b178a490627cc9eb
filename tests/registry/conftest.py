"""Fixtures for the registry suite: one real moto SSM server per session, both backends.

The SSM backend talks HTTP to ``moto.server`` on loopback through boto3 with
normal request signing and fake credentials; nothing is patched in-process.
Each test gets a fresh environment name, so tests share the server safely.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from services.registry import Registry, TtlCache, open_backend
from services.registry.cli import main
from services.registry.files import FileBackend
from tests.registry.support import CliResult, CountingBackend, FakeClock, Harness, RunCli

BACKENDS = ["ssm", "file"]


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


@pytest.fixture
def env_name() -> str:
    """A fresh environment name, so tests never see each other's parameters."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=BACKENDS)
def harness(request: pytest.FixtureRequest, env_name: str, tmp_path: Path) -> Harness:
    """The same behaviour tests run against SSM (moto over HTTP) and the file backend."""
    if request.param == "ssm":
        request.getfixturevalue("aws_environ")
        environ = {"TINYLLAMA_ENV": env_name, "TINYLLAMA_REGISTRY": "ssm"}
        backend = open_backend(environ=environ)
        harness = Harness(
            "ssm",
            backend,
            environ,
            list_call="GetParametersByPath",
            read_call="GetParameter",
            page_size=10,
            ssm_client=backend.client,  # type: ignore[attr-defined]
        )

        def record(model: Any, **_: Any) -> None:
            harness.calls.append(model.name)

        backend.client.meta.events.register("before-call.ssm.*", record)  # type: ignore[attr-defined]
        return harness
    path = tmp_path / "registry.json"
    environ = {
        "TINYLLAMA_ENV": env_name,
        "TINYLLAMA_REGISTRY": "file",
        "TINYLLAMA_REGISTRY_FILE": str(path),
    }
    calls: list[str] = []
    return Harness(
        "file",
        CountingBackend(FileBackend(path), calls),
        environ,
        calls,
        list_call="read_prefix",
        read_call="read",
    )


@pytest.fixture
def clock() -> FakeClock:
    """A hand-driven clock."""
    return FakeClock()


@pytest.fixture
def registry(harness: Harness, env_name: str, clock: FakeClock) -> Registry:
    """A registry of a fresh environment on the backend under test, with a 60 s TTL."""
    return Registry(env_name, harness.backend, cache=TtlCache(ttl=60.0, clock=clock))


@pytest.fixture
def run_cli(harness: Harness, capsys: pytest.CaptureFixture[str]) -> RunCli:
    """Run ``main(argv)`` against the backend under test and capture its output."""

    def run(*argv: str, environ: dict[str, str] | None = None) -> CliResult:
        capsys.readouterr()
        code = main(list(argv), environ={**harness.environ, **(environ or {})})
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
