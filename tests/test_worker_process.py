"""Real worker processes under stress: SIGKILL mid-job, SIGTERM drain, stops, oversize."""

from __future__ import annotations

import asyncio
import json
import signal

import psutil
import pytest

pytestmark = pytest.mark.slow

LONG = {"prompt": "the llama", "max_new_tokens": 600}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _wait_status(gateway, url: str, headers: dict, wanted: set[str], timeout_s: float):
    job = {}
    for _ in range(int(timeout_s / 0.05)):
        job = await (await gateway.get(url, headers=headers)).json()
        if job["status"] in wanted:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job stayed {job.get('status')}")


async def test_sigkill_mid_job_is_resumed_by_another_worker(
    gateway, worker_factory, redis, make_token
):
    """kill -9 of the worker mid-job: another worker finishes it, one coherent text results."""
    headers = _auth(make_token("crash"))
    fast = {"TINYLLAMA_LEASE": "3", "TINYLLAMA_HEARTBEAT": "0.5"}
    first = worker_factory(**fast)
    await first.ready(redis)
    # The uninterrupted answer, for comparison (greedy: exact).
    reference = await (await gateway.post("/infer", json=LONG, headers=headers)).json()
    assert reference["status"] == "succeeded"

    response = await gateway.post("/infer?mode=stream", json=LONG, headers=headers)
    seen_tokens = 0
    shown = ""
    event = None
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:") and event == "token":
            shown += json.loads(line[5:])["text"]
            seen_tokens += 1
            if seen_tokens == 20:
                first.signal(signal.SIGKILL)
                second = worker_factory(**fast)
        elif line.startswith("data:") and event in ("done", "error"):
            final = json.loads(line[5:])
            break
    assert event == "done", final
    assert final["text"] == reference["result"]["text"]
    assert shown == final["text"]  # the client saw no repeats and no gaps
    assert final["usage"]["completion_tokens"] == reference["result"]["usage"]["completion_tokens"]
    second.stop()


async def test_sigterm_drains_running_jobs_then_exits(gateway, worker_factory, redis, make_token):
    """SIGTERM: the running job still finishes, then the worker exits cleanly and withdraws."""
    headers = _auth(make_token("drain"))
    worker = worker_factory()
    await worker.ready(redis)
    response = await gateway.post("/infer?mode=async", json=LONG, headers=headers)
    url = response.headers["Location"]
    await _wait_status(gateway, url, headers, {"running"}, 30)
    worker.signal(signal.SIGTERM)
    job = await _wait_status(gateway, url, headers, {"succeeded", "failed"}, 60)
    assert job["status"] == "succeeded"
    assert job["result"]["usage"]["completion_tokens"] >= 1
    assert worker.process.wait(timeout=40) == 0
    ready = await (await gateway.get("/ready")).json()
    assert worker.worker_id not in [w["id"] for w in ready["workers"]]


async def test_stop_sequence_ends_the_text(gateway, worker_factory, redis, make_token):
    """A stop sequence found in the output ends generation there, reason `stop`."""
    headers = _auth(make_token("stopper"))
    worker = worker_factory()
    await worker.ready(redis)
    free = await (
        await gateway.post(
            "/infer", json={"prompt": "hello", "max_new_tokens": 40}, headers=headers
        )
    ).json()
    text = free["result"]["text"]
    stop = text[10:13] if len(text) > 13 else text[-2:]
    cut = await (
        await gateway.post(
            "/infer",
            json={"prompt": "hello", "max_new_tokens": 40, "stop": [stop]},
            headers=headers,
        )
    ).json()
    assert cut["result"]["finish_reason"] == "stop"
    assert cut["result"]["text"] == text[: text.find(stop)]
    assert stop not in cut["result"]["text"]


async def test_oversized_request_fails_cleanly_and_worker_keeps_serving(
    gateway, worker_factory, redis, make_token
):
    """prompt + max_new_tokens beyond the context fails that job only, with a clear code.

    (The gateway can only prove ~580 of the prompt's ~1500 tokens, so the job reaches the
    worker, whose exact count refuses it.)"""
    headers = _auth(make_token("big"))
    worker = worker_factory()
    await worker.ready(redis)
    big = await (
        await gateway.post(
            "/infer", json={"prompt": "hello " * 1500, "max_new_tokens": 1000}, headers=headers
        )
    ).json()
    assert big["status"] == "failed"
    assert big["error"]["code"] == "request_too_large"
    assert "1000" in big["error"]["message"]
    small = await (
        await gateway.post("/infer", json={"prompt": "hi", "max_new_tokens": 4}, headers=headers)
    ).json()
    assert small["status"] == "succeeded"


async def test_worker_serves_prometheus_metrics(
    aiohttp_client, gateway_settings, worker_factory, redis, make_token
):
    """The worker's /metrics counts generated tokens and observes time to first token."""
    import dataclasses

    import aiohttp

    from services.devstack.redis_server import free_port
    from services.gateway.http.app import create_app

    # A queue of its own: other workers of this module must not take the job.
    queue = "arq:queue:metrics-test"
    gateway = await aiohttp_client(
        create_app(dataclasses.replace(gateway_settings, queue_name=queue))
    )
    port = free_port()
    worker = worker_factory(TINYLLAMA_METRICS_PORT=str(port), TINYLLAMA_QUEUE_NAME=queue)
    await worker.ready(redis)
    job = await (
        await gateway.post(
            "/infer",
            json={"prompt": "hi", "max_new_tokens": 6},
            headers=_auth(make_token("metered")),
        )
    ).json()
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    # Bound where the gateway binds (loopback here), never on every interface.
    listening = [
        c.laddr.ip
        for c in psutil.Process(worker.process.pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    ]
    assert listening == ["127.0.0.1"]
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert (
        values["tinyllama_worker_generation_tokens_total"]
        == job["result"]["usage"]["completion_tokens"]
    )
    assert values["tinyllama_worker_time_to_first_token_seconds_count"] == 1.0
    assert 'tinyllama_worker_jobs_total{outcome="length"}' in values or (
        'tinyllama_worker_jobs_total{outcome="stop"}' in values
    )
