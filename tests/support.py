"""Helpers the tests share: real Redis, a real JWKS server, real worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
from aiohttp import web
from joserfc.jwk import RSAKey
from redis.asyncio import Redis

from services.devstack.redis_server import free_port, redis_answers
from services.protocol import names
from services.protocol.messages import Heartbeat
from services.protocol.serializer import decode_heartbeat

ROOT = Path(__file__).resolve().parent.parent


def new_rsa_key(kid: str) -> RSAKey:
    """A fresh RS256 signing key with a ``kid``."""
    return RSAKey.generate_key(
        2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"}, private=True
    )


class JwksServer:
    """A real HTTP server publishing a JWKS; counts fetches and can go down."""

    def __init__(self, keys: list[RSAKey]) -> None:
        self.keys = list(keys)
        self.fetches = 0
        self.down = False
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _jwks(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.down:
            return web.Response(status=503, text="down")
        body = {"keys": [k.as_dict(private=False) for k in self.keys]}
        return web.json_response(body)

    async def start(self) -> str:
        """Listen on a free loopback port; return the JWKS URL."""
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._jwks)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
        return self.url

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()


def worker_env(*, redis_url: str, model_path: Path, cache_dir: Path, **overrides: str) -> dict:
    """Environment for a real ``python -m services.worker`` process in tests."""
    env = dict(os.environ)
    env.update(
        {
            "TINYLLAMA_ENV": "local",
            "REDIS_URL": redis_url,
            "TINYLLAMA_MODEL": str(model_path),
            "TINYLLAMA_CACHE_DIR": str(cache_dir),
            "TINYLLAMA_THREADS": "1",
            "TINYLLAMA_HEARTBEAT": "0.5",
            "TINYLLAMA_METRICS_PORT": "0",
            # The static engine gives each of the 32 slots CACHE_TOKENS / 32 tokens: 2048 is
            # the demo model's whole context, as the gateway tests expect (34 MB of cache).
            "TINYLLAMA_CACHE_TOKENS": "65536",
            "TINYLLAMA_LOG_LEVEL": os.environ.get("TINYLLAMA_TEST_WORKER_LOG_LEVEL", "WARNING"),
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


def group_members(pgid: int) -> list[psutil.Process]:
    """The live (non-zombie) processes of process group ``pgid``."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (OSError, psutil.Error):
            continue
    return members


def kill_group(pgid: int, *, grace_s: float = 10.0) -> list[str]:
    """SIGTERM a whole process group, SIGKILL what is left after ``grace_s``.

    Returns the command lines that needed SIGKILL (empty when everything stopped).
    A test that starts processes starts them in a group of their own and calls this
    on teardown, pass or fail: nothing it started can outlive it.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    killed = []
    for process in group_members(pgid):
        with contextlib.suppress(psutil.Error):
            killed.append(" ".join(process.cmdline()))
            process.kill()
    return killed


# What the project starts: its services, the CLI, make up's make, a private redis-server.
# (Library helpers such as jsii's node process stop on their own at exit.)
_PROJECT_PROCESS = re.compile(r"-m (services|clients)\.|redis-server|\bmake\b")


def reap_strays() -> list[str]:
    """Kill and reap every project process still below this one; return their command lines.

    With the test run as the subreaper (``become_subreaper``), orphans whose parent
    died are re-parented here instead of to init, so this sees them too.
    """
    strays = []
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            command = " ".join(process.cmdline())
            if not _PROJECT_PROCESS.search(command):
                continue
            if process.status() != psutil.STATUS_ZOMBIE:
                strays.append(command)
            process.kill()
    while True:  # reap whatever was re-parented here and has exited
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
    return strays


class WorkerProcess:
    """A real worker process; ``ready()`` waits for its first ready heartbeat."""

    def __init__(self, env: dict[str, str], *, worker_id: str) -> None:
        self.worker_id = worker_id
        env = {**env, "TINYLLAMA_WORKER_ID": worker_id}
        self.log_path = Path(env["TINYLLAMA_CACHE_DIR"]) / f"{worker_id}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.worker"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stop() can sweep anything it started
        )

    async def ready(self, redis: Redis, *, timeout_s: float = 120.0) -> None:
        """Wait until this worker reports a loaded, warmed-up model."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited {self.process.returncode}: {self.output()}")
            raw = await redis.get(names.heartbeat_key(self.worker_id))
            if raw is not None and decode_heartbeat(raw).ready:
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"worker not ready in {timeout_s} s: {self.output()}")

    def output(self) -> str:
        """The worker's log so far (for failure messages)."""
        return self.log_path.read_text(errors="replace")[-4000:]

    def signal(self, sig: int) -> None:
        """Send a signal (SIGTERM to drain, SIGKILL to crash)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def stop(self, *, timeout_s: float = 30.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        self.signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        kill_group(self.process.pid, grace_s=1.0)
        self._log.close()
        return code


class StartedWorkers:
    """Starts real worker processes on one Redis; ``stop_all`` stops each (a fixture's teardown)."""

    def __init__(
        self, *, redis_url: str, model_path: Path, cache_dir: Path, **defaults: str
    ) -> None:
        self._env = worker_env(
            redis_url=redis_url, model_path=model_path, cache_dir=cache_dir, **defaults
        )
        self.started: list[WorkerProcess] = []

    def start(self, **overrides: str) -> WorkerProcess:
        """One more worker, its environment ``overrides`` on top of the defaults."""
        worker = WorkerProcess({**self._env, **overrides}, worker_id=f"test-{uuid.uuid4().hex[:8]}")
        self.started.append(worker)
        return worker

    def stop_all(self) -> None:
        """Stop every worker started here."""
        for worker in self.started:
            worker.stop()


class RedisServer:
    """A private ``redis-server`` that a test stops and starts again on the same port.

    Append-only, synced on every write, in ``workdir``: a restart is an outage, not a
    loss of data. Each start gets a process group of its own, which ``stop`` sweeps.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout_s: float = 10.0) -> None:
        """Start it (again) and wait until it answers PING."""
        listen = ["--bind", "127.0.0.1", "--port", str(self.port)]
        durable = ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        self.process = subprocess.Popen(
            ["redis-server", *listen, *durable, "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while not redis_answers(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {self.port} did not start")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL it: every client's next command fails until ``start``."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """Stop it and anything left in its process group (teardown)."""
        if self.process is not None:
            kill_group(self.process.pid, grace_s=5.0)
            self.process.wait()


async def wait_gpu(client, headers: dict[str, str], state: str, *, timeout_s: float) -> dict:
    """Poll ``GET /gpu`` until the fleet is in ``state``; fail with what it was instead."""
    gpu: dict = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        gpu = await (await client.get("/gpu", headers=headers)).json()
        if gpu["state"] == state:
            return gpu
        await asyncio.sleep(0.1)
    raise AssertionError(f"fleet stayed {gpu.get('state')} for {timeout_s} s: {gpu}")


def read_json_lines(text: str) -> list[dict]:
    """Parse the JSON log lines of a captured output, skipping anything else."""
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


async def sse_events(response) -> AsyncIterator[tuple[str | None, str]]:
    """A Server-Sent Events response's events as (event name, raw data), until it ends."""
    event = None
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            yield event, line[5:].strip()
            event = None


def live_heartbeat(worker_id: str, model: str, *, ready: bool = True, **limits) -> Heartbeat:
    """A heartbeat as a worker serving ``model`` sends it now (``limits``: its context etc.)."""
    return Heartbeat(
        worker_id=worker_id,
        model=model,
        device="cpu",
        ready=ready,
        capacity=1,
        active_jobs=0,
        tokens_per_s=0.0,
        sent_at=time.time(),
        **limits,
    )


async def read_sse(response) -> list[tuple[str | None, dict]]:
    """Read a Server-Sent Events response until its ``done`` or ``error`` event."""
    events: list[tuple[str | None, dict]] = []
    async for event, data in sse_events(response):
        events.append((event, json.loads(data)))
        if event in ("done", "error"):
            break
    return events
