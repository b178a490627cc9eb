"""Jobs as the gateway sees them: submit, wait, read status, cancel.

Submission is one Lua script, one round trip: idempotency lookup, queue
bound, the ARQ job record (same keys and encoding as ``ArqRedis.enqueue_job``,
so a stock ARQ worker runs it), the queue entry and our job hash. Results
come back through the job's Redis Stream (``XREAD BLOCK``), never by polling.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator

import msgspec
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
)
from redis.asyncio import Redis

from services.protocol import names
from services.protocol.messages import (
    TERMINAL_STATUSES,
    DoneEvent,
    ErrorEvent,
    GenerateResult,
    JobEvent,
    JobPayload,
    StatusEvent,
)
from services.protocol.serializer import decode_event, encode_event, encode_payload, serialize_job

_SUBMIT = """
-- KEYS: 1 idempotency key ('' if none), 2 arq job key, 3 arq result key, 4 queue, 5 our job hash
-- ARGV: 1 job id, 2 arq job bytes, 3 ttl ms of the arq job, 4 score, 5 max depth,
--       6 job hash ttl s, 7.. job hash field/value pairs
if KEYS[1] ~= '' then
  local existing = redis.call('GET', KEYS[1])
  if existing then return {0, existing} end
end
if tonumber(ARGV[5]) > 0 and redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[5]) then
  return {-1, tostring(redis.call('ZCARD', KEYS[4]))}
end
if redis.call('EXISTS', KEYS[2], KEYS[3]) > 0 then return {0, ARGV[1]} end
redis.call('PSETEX', KEYS[2], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[5], unpack(fields))
redis.call('EXPIRE', KEYS[5], ARGV[6])
if KEYS[1] ~= '' then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[6]) end
return {1, ARGV[1]}
"""

# Cancel a job that no worker has taken yet: drop it from the queue and end its stream.
_CANCEL_QUEUED = """
-- KEYS: 1 queue, 2 arq job key, 3 our job hash, 4 events stream, 5 arq in-progress key
-- ARGV: 1 job id, 2 encoded final event, 3 ttl s
-- ARQ keeps a running job in the queue until it ends: in-progress means "running".
if redis.call('EXISTS', KEYS[5]) == 0 and redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[3], 'status', 'cancelled')
  redis.call('XADD', KEYS[4], '*', 'e', ARGV[2])
  redis.call('EXPIRE', KEYS[4], ARGV[3])
  return 1
end
return 0
"""


class QueueFull(Exception):
    """The queue holds as many jobs as it may."""

    def __init__(self, depth: int) -> None:
        super().__init__(f"queue is full ({depth} jobs waiting)")
        self.depth = depth


@dataclasses.dataclass(frozen=True, kw_only=True)
class Submitted:
    """The job a submission refers to, and whether this call created it."""

    job_id: str
    created: bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobView:
    """A job's state as its owner may see it."""

    job_id: str
    status: str
    created_at: float
    deadline: float
    result: GenerateResult | None = None
    error: ErrorEvent | None = None


def idempotency_key(*, subject: str, key: str) -> str:
    """Idempotency is per subject: two users' equal keys never meet."""
    return f"{names.KEY_PREFIX}:idem:{subject}:{key}"


async def submit_job(
    redis: Redis,
    payload: JobPayload,
    *,
    queue_name: str,
    max_depth: int,
    ttl_s: int,
    idempotency: str | None = None,
) -> Submitted:
    """Put one job on the ARQ queue unless the key already names one; raise ``QueueFull``."""
    now_ms = int(time.time() * 1000)
    expires_ms = max(1, int(payload.deadline * 1000) - now_ms)
    arq_job = serialize_job(
        {
            "t": None,
            "f": names.JOB_FUNCTION,
            "a": [],
            "k": {"payload": encode_payload(payload)},
            "et": now_ms,
        }
    )
    fields = [
        "subject",
        payload.subject,
        "status",
        "queued",
        "created_at",
        repr(payload.enqueued_at),
        "deadline",
        repr(payload.deadline),
        "request_id",
        payload.request_id,
        "idle",
        str(payload.request.idle),
    ]
    keys = [
        idempotency or "",
        job_key_prefix + payload.job_id,
        result_key_prefix + payload.job_id,
        queue_name,
        names.job_key(payload.job_id),
    ]
    args = [payload.job_id, arq_job, expires_ms, now_ms, max_depth, ttl_s, *fields]
    code, value = await redis.eval(_SUBMIT, len(keys), *keys, *args)
    if int(code) == -1:
        raise QueueFull(int(value))
    job_id = value.decode() if isinstance(value, bytes) else str(value)
    return Submitted(job_id=job_id, created=int(code) == 1)


async def queue_depth(redis: Redis, *, queue_name: str) -> int:
    """How many jobs wait in the queue."""
    return int(await redis.zcard(queue_name))


async def stream_events(
    redis: Redis, job_id: str, *, deadline: float, block_ms: int = 5_000, after: str = "0-0"
) -> AsyncIterator[tuple[str, JobEvent | None]]:
    """Yield a job's events in order until its last one; ``None`` marks a quiet ``block_ms``.

    Stops (without a final event) once ``deadline`` (monotonic) passes.
    """
    key = names.events_key(job_id)
    cursor = after
    while True:
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0:
            return
        reply = await redis.xread(
            {key: cursor}, count=256, block=max(1, min(block_ms, remaining_ms))
        )
        if not reply:
            yield cursor, None
            continue
        for entry_id, fields in reply[0][1]:
            cursor = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            event = decode_event(fields[b"e"])
            yield cursor, event
            if isinstance(event, (DoneEvent, ErrorEvent)):
                return


async def wait_for_end(redis: Redis, job_id: str, *, timeout_s: float) -> JobEvent | None:
    """The job's final event, or ``None`` if it did not end within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    async for _, event in stream_events(redis, job_id, deadline=deadline):
        if isinstance(event, (DoneEvent, ErrorEvent)):
            return event
    return None


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


async def read_job(redis: Redis, job_id: str, *, subject: str) -> JobView | None:
    """The job if it exists and belongs to ``subject``; ``None`` otherwise (no existence leak)."""
    fields = await redis.hgetall(names.job_key(job_id))
    if not fields or _text(fields.get(b"subject")) != subject:
        return None
    status = _text(fields.get(b"status")) or "queued"
    deadline = float(_text(fields.get(b"deadline")) or 0)
    view = JobView(
        job_id=job_id,
        status=status,
        created_at=float(_text(fields.get(b"created_at")) or 0),
        deadline=deadline,
    )
    raw_result = await redis.get(names.result_key(job_id))
    if raw_result is not None:
        final = decode_event(raw_result)
        if isinstance(final, DoneEvent):
            status = "cancelled" if final.result.finish_reason == "cancelled" else "succeeded"
            return dataclasses.replace(view, status=status, result=final.result)
        if isinstance(final, ErrorEvent):
            return dataclasses.replace(view, status=final.status, error=final)
    if status in ("queued", "starting") and time.time() > deadline:
        return dataclasses.replace(view, status="expired")
    return view


async def cancel_job(redis: Redis, job_id: str, *, queue_name: str, ttl_s: int) -> bool:
    """Ask for a cancel; a queued job ends now, a running one at its next token. True if it ran."""
    final = ErrorEvent(code="cancelled", message="cancelled before it started", status="cancelled")
    keys = [
        queue_name,
        job_key_prefix + job_id,
        names.job_key(job_id),
        names.events_key(job_id),
        in_progress_key_prefix + job_id,
    ]
    dropped = await redis.eval(_CANCEL_QUEUED, len(keys), *keys, job_id, encode_event(final), ttl_s)
    if int(dropped) == 1:
        await redis.set(names.result_key(job_id), encode_event(final), ex=ttl_s, nx=True)
        return True
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(names.cancel_key(job_id), b"1", ex=ttl_s)
        pipe.zadd(abort_jobs_ss, {job_id: int(time.time() * 1000)})
        await pipe.execute()
    return True


def is_terminal(status: str) -> bool:
    """True once a job can change no more."""
    return status in TERMINAL_STATUSES


def status_event(event: JobEvent) -> str | None:
    """The status an event announces, if any."""
    if isinstance(event, StatusEvent):
        return event.status
    return None


def encode_json(value: object) -> bytes:
    """JSON for responses (msgspec-encoded Structs included)."""
    return msgspec.json.encode(value)
