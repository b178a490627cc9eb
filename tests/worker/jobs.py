"""Worker tests' side of the queue: enqueue as a stock ARQ client does, watch what comes back.

Independent of the gateway: only the contract in ``services.protocol`` is shared.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from arq.connections import ArqRedis
from redis.asyncio import Redis

from services.protocol import names
from services.protocol.messages import (
    DoneEvent,
    ErrorEvent,
    GenerateRequest,
    JobEvent,
    JobPayload,
    StatusEvent,
    TokenEvent,
)
from services.protocol.serializer import (
    decode_event,
    decode_heartbeat,
    encode_payload,
    serialize_job,
)
from tests.support import WorkerProcess


async def enqueue(
    redis: Redis, *, prompt: str = "the llama", max_new_tokens: int = 8, deadline_s: float = 120.0
) -> str:
    """Put one generation job on the default queue; return its id."""
    now = time.time()
    job_id = uuid.uuid4().hex
    payload = JobPayload(
        job_id=job_id,
        subject="worker-test",
        request=GenerateRequest(prompt=prompt, max_new_tokens=max_new_tokens),
        enqueued_at=now,
        deadline=now + deadline_s,
    )
    pool = ArqRedis(connection_pool=redis.connection_pool)
    pool.job_serializer = serialize_job
    job = await pool.enqueue_job(
        names.JOB_FUNCTION, payload=encode_payload(payload), _job_id=job_id
    )
    assert job is not None
    return job_id


async def final_event(redis: Redis, job_id: str, *, timeout_s: float) -> DoneEvent | ErrorEvent:
    """The job's final event, waiting up to ``timeout_s`` for it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        raw = await redis.get(names.result_key(job_id))
        if raw is not None:
            event = decode_event(raw)
            assert isinstance(event, DoneEvent | ErrorEvent)
            return event
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end within {timeout_s} s")


async def stream_events(redis: Redis, job_id: str) -> list[JobEvent]:
    """Every event in the job's stream, in order."""
    field = names.EVENT_FIELD.encode()
    return [decode_event(f[field]) for _, f in await redis.xrange(names.events_key(job_id))]


async def wait_running(
    redis: Redis, job_id: str, *, worker_id: str, tokens: int, timeout_s: float = 30.0
) -> None:
    """Wait until ``worker_id`` runs the job and has published ``tokens`` token events for it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events = await stream_events(redis, job_id)
        starts = [
            n
            for n, e in enumerate(events)
            if isinstance(e, StatusEvent) and e.status == "running" and e.worker == worker_id
        ]
        if starts and sum(isinstance(e, TokenEvent) for e in events[starts[-1] :]) >= tokens:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{worker_id} did not run job {job_id} within {timeout_s} s")


async def wait_heartbeat(
    redis: Redis, worker: WorkerProcess, *, since: float, timeout_s: float = 15.0
) -> None:
    """Wait for a ready heartbeat the worker sent after ``since`` (wall clock)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert worker.process.poll() is None, f"worker exited: {worker.output()}"
        raw = await redis.get(names.heartbeat_key(worker.worker_id))
        if raw is not None:
            beat = decode_heartbeat(raw)
            if beat.ready and beat.sent_at > since:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no heartbeat since {since} within {timeout_s} s: {worker.output()}")
