"""Fixtures for the registry suite: one real moto SSM server per session, both backends.

The SSM backend talks HTTP to ``moto.server`` on loopback through boto3 with
normal request signing and fake credentials; nothing is patched in-process.
Each test gets a fresh environment name, so tests share the server safely.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from services.registry import Registry, TtlCache, open_backend
from services.registry.cli import main
from services.registry.files import FileBackend
from tests.registry.support import CliResult, CountingBackend, FakeClock, Harness, RunCli

BACKENDS = ["ssm", "file"]


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
