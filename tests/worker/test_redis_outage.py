"""A real worker process rides out Redis restarts: idle, mid-job, and past the delivery timeout."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from services.protocol import names
from services.protocol.messages import DoneEvent, ErrorEvent, TokenEvent
from tests.support import RedisServer, WorkerProcess, read_json_lines
from tests.worker.jobs import enqueue, final_event, stream_events, wait_heartbeat, wait_running

pytestmark = pytest.mark.slow

LONG = {"prompt": "llama llama", "max_new_tokens": 1000}  # ~6 s of demo-model tokens


def _logs(worker: WorkerProcess, message: str) -> list[dict]:
    lines = read_json_lines(worker.log_path.read_text(errors="replace"))
    return [line for line in lines if line["msg"].startswith(message)]


def _errors(worker: WorkerProcess) -> list[str]:
    """Tracebacks and error records ("Task exception was never retrieved" is one)."""
    text = worker.log_path.read_text(errors="replace")
    return [line for line in text.splitlines() if "Traceback" in line or '"level": "error"' in line]


async def _restart(redis_server: RedisServer, *, away_s: float) -> float:
    """Kill Redis, leave it away for ``away_s``, start it again; return when it was back."""
    redis_server.kill()
    await asyncio.sleep(away_s)
    redis_server.start()
    return time.time()


async def _serves_a_new_job(redis_client: Redis, worker: WorkerProcess) -> None:
    job_id = await enqueue(redis_client, max_new_tokens=8)
    final = await final_event(redis_client, job_id, timeout_s=20)
    assert isinstance(final, DoneEvent), final
    assert worker.process.poll() is None
    assert _errors(worker) == []


async def test_an_idle_worker_rides_out_a_redis_restart(redis_server, redis_client, start_worker):
    """Redis away 2 s under an idle worker: same process and model, one warning, serves again."""
    worker = start_worker()
    await worker.ready(redis_client)
    back = await _restart(redis_server, away_s=2.0)
    await wait_heartbeat(redis_client, worker, since=back)
    await _serves_a_new_job(redis_client, worker)
    assert len(_logs(worker, "worker ready")) == 1  # the model was not loaded again
    assert len(_logs(worker, "queue poll: Redis unavailable")) == 1  # per outage, not per poll


async def test_a_running_job_streams_every_token_across_a_redis_restart(
    redis_server, redis_client, start_worker
):
    """Redis restarts mid-job: the job still ends done and its stream holds every token in order."""
    worker = start_worker()
    await worker.ready(redis_client)
    job_id = await enqueue(redis_client, **LONG)
    await wait_running(redis_client, job_id, worker_id=worker.worker_id, tokens=20)
    await _restart(redis_server, away_s=0.5)
    final = await final_event(redis_client, job_id, timeout_s=30)
    assert isinstance(final, DoneEvent), final
    assert final.result.usage.completion_tokens == LONG["max_new_tokens"]
    tokens = {}  # by seq: a batch whose reply was lost may have been written twice
    for event in await stream_events(redis_client, job_id):
        if isinstance(event, TokenEvent):
            assert tokens.setdefault(event.seq, event) == event
    assert list(tokens) == list(range(len(tokens)))
    assert "".join(t.text for t in tokens.values()) == final.result.text
    await _serves_a_new_job(redis_client, worker)


async def test_a_job_whose_events_cannot_be_delivered_ends_delivery_failed(
    redis_server, redis_client, start_worker
):
    """Redis away past TINYLLAMA_DELIVERY_TIMEOUT: the job stops and ends delivery_failed."""
    worker = start_worker(TINYLLAMA_DELIVERY_TIMEOUT="1")
    await worker.ready(redis_client)
    job_id = await enqueue(redis_client, prompt="llama llama", max_new_tokens=2000)
    await wait_running(redis_client, job_id, worker_id=worker.worker_id, tokens=20)
    await _restart(redis_server, away_s=3.0)
    final = await final_event(redis_client, job_id, timeout_s=30)
    assert isinstance(final, ErrorEvent), final
    assert (final.code, final.status) == ("delivery_failed", "failed")
    events = await stream_events(redis_client, job_id)
    assert events[-1] == final  # the client's stream ends with it
    assert sum(isinstance(e, TokenEvent) for e in events) < 2000  # generation stopped
    assert await redis_client.hget(names.job_key(job_id), names.JobField.STATUS) == b"failed"
    await _serves_a_new_job(redis_client, worker)
