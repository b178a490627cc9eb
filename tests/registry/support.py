"""Helpers shared by the registry tests (fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.registry import Parameter
from services.registry.backend import Backend


class CountingBackend:
    """Wraps a backend and records which of its methods were called."""

    def __init__(self, inner: Backend, calls: list[str]) -> None:
        self.inner = inner
        self.calls = calls

    def read(self, env: str, key: str) -> Parameter | None:
        self.calls.append("read")
        return self.inner.read(env, key)

    def read_prefix(self, env: str, prefix: str) -> list[Parameter]:
        self.calls.append("read_prefix")
        return self.inner.read_prefix(env, prefix)

    def write(self, env: str, parameter: Parameter) -> None:
        self.calls.append("write")
        self.inner.write(env, parameter)

    def delete(self, env: str, key: str) -> bool:
        self.calls.append("delete")
        return self.inner.delete(env, key)


@dataclass
class Harness:
    """One backend under test, its call log, and the bootstrap variables that select it."""

    name: str
    backend: Backend
    environ: dict[str, str]
    calls: list[str] = field(default_factory=list)
    # What one listing call and one single read look like in ``calls``.
    list_call: str = ""
    read_call: str = ""
    page_size: int | None = None
    ssm_client: Any = None

    def clear_calls(self) -> None:
        """Forget the calls recorded so far."""
        self.calls.clear()


class FakeClock:
    """A clock the test moves by hand, so TTL tests need no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


@dataclass(frozen=True)
class CliResult:
    """Exit status and captured output of one CLI run."""

    code: int
    out: str
    err: str


RunCli = Callable[..., CliResult]
