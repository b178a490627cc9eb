"""``make chaos``: a 60 s mixed load on a real stack, with Redis restarted and a worker killed.

Processes: a private ``redis-server`` (append-only, so a restart is an outage, not a
loss), one gateway, two workers on the demo model. Clients, all on 127.0.0.1, mix
every way of calling: ``/infer`` wait, async + poll, stream, stream-and-leave,
cancel; ``/v1/chat/completions`` plain and streamed. In the middle Redis is killed
and started again, and later one worker gets ``kill -9`` (and a replacement starts).

At the end it checks what the issue asks for and prints the counts as JSON:

- every job in a final state (polled after the load, within the job deadline);
- no 5xx other than 503s that carry ``Retry-After``;
- no stream left open (each ended with a final event or ``[DONE]``, or was closed
  by the server, within 30 s of the load's end);
- no traceback in any log.

Exit status 0 when all hold. Usage: ``python bench/chaos.py [--seconds 60] [--clients 12]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.devstack.identity import mint_token  # noqa: E402
from services.worker.demo_model import build_demo_model, default_demo_path  # noqa: E402
from tests.faults.stack import (  # noqa: E402
    GatewayProcess,
    fault_worker_env,
    tracebacks,
    write_jwks,
)
from tests.support import RedisServer, WorkerProcess, new_rsa_key  # noqa: E402

ISSUER = "https://issuer.chaos/pool"
CLIENT_ID = "chaos-client"
FINAL = {"succeeded", "failed", "cancelled", "expired"}


class Tally:
    """What the clients saw."""

    def __init__(self) -> None:
        self.statuses: collections.Counter[str] = collections.Counter()
        self.bad_5xx: list[str] = []
        self.streams_open = 0
        self.streams_ended: collections.Counter[str] = collections.Counter()
        self.client_errors: collections.Counter[str] = collections.Counter()
        self.jobs: dict[str, str] = {}  # job id -> token

    def status(self, kind: str, response: aiohttp.ClientResponse) -> None:
        self.statuses[f"{kind} {response.status}"] += 1
        if response.status >= 500 and not (
            response.status == 503 and response.headers.get("Retry-After")
        ):
            self.bad_5xx.append(f"{kind} {response.status}")


async def _read_events(response: aiohttp.ClientResponse) -> str:
    last = "closed"
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("event:"):
            last = line[6:].strip()
        elif line == "data: [DONE]":
            last = "[DONE]"
    return last


async def one_call(session, url: str, token: str, tally: Tally, rng: random.Random) -> None:
    """One client call of a random kind."""
    headers = {"Authorization": f"Bearer {token}"}
    body = {"prompt": f"chaos {rng.random()}", "max_new_tokens": rng.choice([8, 32, 128, 400])}
    kind = rng.choice(["wait", "async", "stream", "leave", "cancel", "chat", "chat-stream"])
    if kind.startswith("chat"):
        chat = {
            "model": "tinyllama",
            "messages": [{"role": "user", "content": body["prompt"]}],
            "max_tokens": body["max_new_tokens"],
            "stream": kind == "chat-stream",
        }
        path, payload = "/v1/chat/completions", chat
    else:
        mode = {"leave": "stream", "cancel": "async"}.get(kind, kind)
        path, payload = f"/infer?mode={mode}", body
    async with session.post(url + path, json=payload, headers=headers) as response:
        tally.status(kind, response)
        if job := response.headers.get("X-Job-Id") or _job_of(response):
            tally.jobs[job] = token
        if response.status != 200 or "event-stream" not in response.content_type:
            with contextlib.suppress(Exception):
                data = await response.json()
                if isinstance(data, dict) and data.get("id") and kind in ("async", "cancel"):
                    tally.jobs[data["id"]] = token
                    if kind == "cancel":
                        async with session.delete(
                            f"{url}/jobs/{data['id']}", headers=headers
                        ) as cancelled:
                            tally.status("delete", cancelled)
            return
        tally.streams_open += 1
        try:
            if kind == "leave":
                await asyncio.sleep(rng.random())
                tally.streams_ended["left"] += 1
                return
            ended = await asyncio.wait_for(_read_events(response), timeout=150)
            tally.streams_ended[ended] += 1
        except TimeoutError:
            tally.streams_ended["hung"] += 1
        finally:
            tally.streams_open -= 1


def _job_of(response: aiohttp.ClientResponse) -> str | None:
    location = response.headers.get("Location", "")
    return location.rsplit("/", 1)[-1] if location.startswith("/jobs/") else None


async def client_loop(url: str, token: str, tally: Tally, *, until: float, seed: int) -> None:
    """Call again and again until ``until``; connection errors are counted, not fatal."""
    rng = random.Random(seed)
    timeout = aiohttp.ClientTimeout(total=200)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < until:
            try:
                await one_call(session, url, token, tally, rng)
            except (aiohttp.ClientError, TimeoutError) as exc:
                tally.client_errors[type(exc).__name__] += 1
            await asyncio.sleep(rng.random() * 0.3)


async def final_states(url: str, tally: Tally, *, timeout_s: float) -> collections.Counter[str]:
    """Poll every job seen until all are final or the time is up; count their last status."""
    pending = dict(tally.jobs)
    states: collections.Counter[str] = collections.Counter()
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while pending and time.monotonic() < deadline:
            for job, token in list(pending.items()):
                headers = {"Authorization": f"Bearer {token}"}
                async with session.get(f"{url}/jobs/{job}", headers=headers) as response:
                    if response.status != 200:
                        continue
                    status = (await response.json())["status"]
                if status in FINAL:
                    states[status] += 1
                    del pending[job]
            await asyncio.sleep(1.0)
    states["not final"] = len(pending)
    return states


async def run(args: argparse.Namespace) -> dict:
    """Start the stack, run the load with its faults, and count what happened."""
    work = Path(tempfile.mkdtemp(prefix="tinyllama-chaos-"))
    cache = Path(os.environ.get("TINYLLAMA_CACHE_DIR", Path.home() / ".cache" / "tinyllama"))
    model = build_demo_model(default_demo_path(cache_dir=cache))
    key = new_rsa_key("chaos")
    redis = RedisServer(work)
    redis.start()
    gateway = GatewayProcess.start_with(
        work,
        redis_url=redis.url,
        jwks_url=write_jwks(work / "jwks.json", [key]),
        TINYLLAMA_JWT_ISSUER=ISSUER,
        TINYLLAMA_JWT_CLIENT_IDS=CLIENT_ID,
        TINYLLAMA_RATE_LIMIT="20",
        TINYLLAMA_JOB_DEADLINE="90",
        TINYLLAMA_WAIT_TIMEOUT="120",  # past the deadline: a job ends, or expires (503)
    )
    env = fault_worker_env(redis_url=redis.url, model_path=model, cache_dir=work)
    workers = [WorkerProcess(env, worker_id=f"chaos-{i}") for i in range(2)]
    events: list[str] = []
    try:
        await gateway.ready()
        from redis.asyncio import Redis

        probe = Redis.from_url(redis.url)
        for worker in workers:
            await worker.ready(probe)
        await probe.aclose()
        tokens = [
            mint_token(key, subject=f"user-{i}", issuer=ISSUER, client_id=CLIENT_ID)
            for i in range(args.clients)
        ]
        tally = Tally()
        started = time.monotonic()
        until = started + args.seconds
        clients = [
            asyncio.create_task(client_loop(gateway.url, t, tally, until=until, seed=i))
            for i, t in enumerate(tokens)
        ]
        await asyncio.sleep(args.seconds / 3)
        events.append(f"{time.monotonic() - started:.1f}s redis killed")
        redis.kill()
        await asyncio.sleep(2.0)
        redis.start()
        events.append(f"{time.monotonic() - started:.1f}s redis started")
        await asyncio.sleep(args.seconds / 4)
        workers[0].signal(signal.SIGKILL)
        events.append(f"{time.monotonic() - started:.1f}s {workers[0].worker_id} killed -9")
        workers.append(WorkerProcess(env, worker_id="chaos-2"))
        await asyncio.gather(*clients)
        load_end = time.monotonic()
        states = await final_states(gateway.url, tally, timeout_s=120)
        logs = {"gateway": gateway.output(), **{w.worker_id: w.output() for w in workers}}
        traces = {name: tracebacks(text) for name, text in logs.items()}
        traces = {name: lines for name, lines in traces.items() if lines}
        for name, text in logs.items():
            if "Task exception was never retrieved" in text:
                traces.setdefault(name, []).append("Task exception was never retrieved")
        summary = {
            "seconds": args.seconds,
            "clients": args.clients,
            "faults": events,
            "responses": dict(sorted(tally.statuses.items())),
            "bad_5xx": tally.bad_5xx,
            "streams_ended": dict(tally.streams_ended),
            "streams_left_open": tally.streams_open,
            "client_errors": dict(tally.client_errors),
            "jobs": len(tally.jobs),
            "final_states": dict(states),
            "drain_s": round(time.monotonic() - load_end, 1),
            "tracebacks": {name: lines[:5] for name, lines in traces.items()},
        }
        summary["ok"] = (
            not tally.bad_5xx
            and tally.streams_open == 0
            and tally.streams_ended["hung"] == 0
            and states["not final"] == 0
            and not traces
        )
        return summary
    finally:
        for worker in workers:
            worker.stop()
        gateway.stop()
        redis.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the chaos load and print its summary as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=12)
    args = parser.parse_args(argv)
    summary = asyncio.run(run(args))
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
