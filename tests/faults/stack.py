"""A whole stack in real processes for fault injection: private Redis, gateway, worker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from services.devstack.redis_server import free_port
from tests.conftest import CLIENT_ID, ISSUER
from tests.support import ROOT, kill_group, sse_events, worker_env


def write_jwks(path: Path, keys: list) -> str:
    """Publish ``keys`` as a JWKS file; return its ``file://`` URL."""
    path.write_text(json.dumps({"keys": [k.as_dict(private=False) for k in keys]}))
    return path.as_uri()


def gateway_env(*, redis_url: str, jwks_url: str, port: int, **overrides: str) -> dict[str, str]:
    """Environment for a real ``python -m services.gateway`` process in the fault tests."""
    env = dict(os.environ)
    env.update(
        {
            "TINYLLAMA_ENV": "local",
            "TINYLLAMA_HOST": "127.0.0.1",
            "TINYLLAMA_PORT": str(port),
            "REDIS_URL": redis_url,
            "TINYLLAMA_JWKS_URL": jwks_url,
            "TINYLLAMA_JWT_ISSUER": ISSUER,
            "TINYLLAMA_JWT_CLIENT_IDS": CLIENT_ID,
            "TINYLLAMA_FLEET": "none",
            "TINYLLAMA_RATE_LIMIT": "1000",
            "TINYLLAMA_JOB_DEADLINE": "120",
            "TINYLLAMA_WAIT_TIMEOUT": "60",
            "TINYLLAMA_HEARTBEAT_MAX_AGE": "5",
            "TINYLLAMA_SSE_PING": "1",
            "TINYLLAMA_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


# Short leases and drains: a killed worker's jobs run again within seconds.
FAULT_WORKER_SETTINGS = {"TINYLLAMA_LEASE": "3", "TINYLLAMA_DRAIN_TIMEOUT": "5"}


def fault_worker_env(
    *, redis_url: str, model_path: Path, cache_dir: Path, **overrides: str
) -> dict[str, str]:
    """A worker's environment for fault runs: short leases and drains, so recovery is quick."""
    return worker_env(
        redis_url=redis_url,
        model_path=model_path,
        cache_dir=cache_dir,
        **{**FAULT_WORKER_SETTINGS, **overrides},
    )


class GatewayProcess:
    """A real gateway process on a free loopback port, logging to a file."""

    def __init__(self, env: dict[str, str], *, log_path: Path) -> None:
        self.port = int(env["TINYLLAMA_PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.gateway"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @classmethod
    def start_with(cls, tmp: Path, **env: str) -> GatewayProcess:
        """A gateway on a free port with ``gateway_env(**env)``; call ``ready`` next."""
        port = free_port()
        return cls(gateway_env(port=port, **env), log_path=tmp / f"gateway-{port}.log")

    async def ready(self, *, timeout_s: float = 30.0) -> None:
        """Wait until ``/health`` answers."""
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"gateway exited: {self.output()}")
                try:
                    async with session.get(f"{self.url}/health") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise TimeoutError(f"gateway not up in {timeout_s} s: {self.output()}")

    def output(self) -> str:
        """Everything the gateway logged so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM (drain), SIGKILL after 10 s; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        kill_group(self.process.pid, grace_s=1.0)
        self._log.close()
        return code


def tracebacks(log: str) -> list[str]:
    """The log lines that carry a traceback or an error record."""
    return [
        line
        for line in log.splitlines()
        if "Traceback" in line or '"level": "error"' in line or '"level": "critical"' in line
    ]


async def read_stream(response: aiohttp.ClientResponse) -> list[tuple[str | None, str]]:
    """Every SSE event of a response until the server ends it: (event, raw data)."""
    return [item async for item in sse_events(response)]
