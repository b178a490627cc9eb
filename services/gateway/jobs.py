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

from services.gateway.scripts import LuaScript, run_script
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

_SUBMIT = LuaScript("""
-- One round trip for a whole admission: rate limit, idempotency, queue bound, the ARQ job
-- (same keys and encoding as ArqRedis.enqueue_job), our job hash, the fleet's idle deadline.
-- KEYS: 1 idempotency key, 2 arq job key, 3 arq result key, 4 queue, 5 our job hash,
--       6 rate bucket, 7 fleet hash          ('' where unused)
-- ARGV: 1 job id, 2 arq job bytes, 3 arq job ttl ms, 4 score, 5 max depth, 6 hash ttl s,
--       7 rate per s (0 = none), 8 burst, 9 now s, 10 idle deadline (0 = none),
--       11.. job hash field/value pairs
-- Returns {1, id} created, {0, id} existing, {-1, depth} queue full, {-2, wait s} rate limited.
local rate = tonumber(ARGV[7])
if KEYS[6] ~= '' and rate > 0 then
  local burst = tonumber(ARGV[8])
  local now = tonumber(ARGV[9])
  local bucket = redis.call('HMGET', KEYS[6], 'tokens', 'at')
  local tokens = tonumber(bucket[1]) or burst
  local at = tonumber(bucket[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
  if tokens < 1 then
    return {-2, tostring((1 - tokens) / rate)}
  end
  redis.call('HSET', KEYS[6], 'tokens', tostring(tokens - 1), 'at', tostring(now))
  redis.call('EXPIRE', KEYS[6], math.ceil(burst / rate) + 1)
end
if KEYS[1] ~= '' then
  local existing = redis.call('GET', KEYS[1])
  if existing then return {0, existing} end
end
local depth = redis.call('ZCARD', KEYS[4])
if tonumber(ARGV[5]) > 0 and depth >= tonumber(ARGV[5]) then
  return {-1, tostring(depth)}
end
if redis.call('EXISTS', KEYS[2], KEYS[3]) > 0 then return {0, ARGV[1]} end
redis.call('PSETEX', KEYS[2], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
local fields = {}
for i = 11, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[5], unpack(fields))
redis.call('EXPIRE', KEYS[5], ARGV[6])
if KEYS[1] ~= '' then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[6]) end
if KEYS[7] ~= '' and tonumber(ARGV[10]) > 0 then
  local current = tonumber(redis.call('HGET', KEYS[7], 'idle_until') or '0')
  if tonumber(ARGV[10]) > current then redis.call('HSET', KEYS[7], 'idle_until', ARGV[10]) end
  local state = redis.call('HGET', KEYS[7], 'state') or 'stopped'
  if state == 'stopped' or state == 'draining' then redis.call('HSET', KEYS[7], 'wanted', '1') end
end
return {1, ARGV[1]}
""")

# Cancel a job that no worker has taken yet: drop it from the queue and end its stream.
_CANCEL_QUEUED = LuaScript("""
-- KEYS: 1 queue, 2 arq job key, 3 our job hash, 4 events stream, 5 arq in-progress key,
--       6 result key, 7 done latch
-- ARGV: 1 job id, 2 encoded final event, 3 ttl s
-- ARQ keeps a running job in the queue until it ends: in-progress means "running".
if redis.call('EXISTS', KEYS[5]) == 0 and redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[3], 'status', 'cancelled')
  redis.call('XADD', KEYS[4], '*', 'e', ARGV[2])
  redis.call('EXPIRE', KEYS[4], ARGV[3])
  redis.call('SET', KEYS[6], ARGV[2], 'EX', ARGV[3], 'NX')
  redis.call('RPUSH', KEYS[7], '1')
  redis.call('EXPIRE', KEYS[7], ARGV[3])
  return 1
end
return 0
""")


class RateLimited(Exception):
    """The subject's token bucket is empty."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"rate limited for {wait_s:.2f} s")
        self.wait_s = wait_s


@dataclasses.dataclass(frozen=True, kw_only=True)
class RateLimit:
    """A token bucket: ``rate`` per second, ``burst`` at most, per subject."""

    rate: float
    burst: float


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
    rate_limit: RateLimit | None = None,
    idle_deadline: float | None = None,
) -> Submitted:
    """Admit and enqueue one job in one round trip; raise ``RateLimited`` or ``QueueFull``."""
    now = time.time()
    now_ms = int(now * 1000)
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
        "subject", payload.subject,
        "status", "queued",
        "created_at", repr(payload.enqueued_at),
        "deadline", repr(payload.deadline),
        "request_id", payload.request_id,
        "idle", str(payload.request.idle),
    ]  # fmt: skip
    keys = [
        idempotency or "",
        job_key_prefix + payload.job_id,
        result_key_prefix + payload.job_id,
        queue_name,
        names.job_key(payload.job_id),
        rate_key(payload.subject) if rate_limit else "",
        names.FLEET_KEY if idle_deadline else "",
    ]
    args = [
        payload.job_id, arq_job, expires_ms, now_ms, max_depth, ttl_s,
        rate_limit.rate if rate_limit else 0, rate_limit.burst if rate_limit else 0, repr(now),
        repr(idle_deadline or 0), *fields,
    ]  # fmt: skip
    code, value = await run_script(redis, _SUBMIT, keys, args)
    code = int(code)
    if code == -2:
        raise RateLimited(float(value))
    if code == -1:
        raise QueueFull(int(value))
    job_id = value.decode() if isinstance(value, bytes) else str(value)
    return Submitted(job_id=job_id, created=code == 1)


def rate_key(subject: str) -> str:
    """The token bucket of one subject."""
    return f"{names.KEY_PREFIX}:rate:{subject}"


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
    """The job's final event, or ``None`` if it did not end within ``timeout_s``.

    Blocks on the job's done latch (one wake-up per job, not one per token); the
    latch is pushed back after waking so every other waiter on the job wakes too.
    """
    raw = await redis.get(names.result_key(job_id))
    if raw is None and timeout_s > 0:
        latch = names.done_key(job_id)
        if await redis.blpop([latch], timeout=max(0.01, timeout_s)) is not None:
            await redis.rpush(latch, b"1")
            raw = await redis.get(names.result_key(job_id))
    return decode_event(raw) if raw is not None else None


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
        names.result_key(job_id),
        names.done_key(job_id),
    ]
    dropped = await run_script(redis, _CANCEL_QUEUED, keys, [job_id, encode_event(final), ttl_s])
    if int(dropped) == 1:
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
