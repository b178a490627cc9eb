"""Jobs in Redis: the one module that knows a job's keys, fields and scripts.

A job is an ARQ job (same keys and encoding as ``ArqRedis.enqueue_job``, so a stock
ARQ worker runs it) plus our hash (owner, status, times), its event stream, a
write-once result and a done latch. Every change that must not interleave is one
Lua script: admission (rate limit, idempotency, reaping, queue bound, enqueue, the
fleet's wake-up), cancel, expiry and the operator's failing of queued jobs.

Queue membership is what "live" means: ARQ keeps a job in its queue until it ends,
running or not. Jobs whose deadline passed while nobody ran them are reaped from it
(``tl:deadlines:<queue>`` indexes them), so the queue bound counts live jobs only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Literal

from redis.asyncio import Redis

from services.gateway.billing.budget import BudgetCap
from services.gateway.jobs.ratelimit import RATE_LUA, RateLimit, bucket_key
from services.protocol import names
from services.protocol.fleet import FLEET_LUA
from services.protocol.messages import DoneEvent, ErrorEvent, GenerateResult, JobEvent, JobPayload
from services.protocol.names import JobField
from services.protocol.scripts import LuaScript, as_text, lua_key, lua_string
from services.protocol.serializer import decode_event, encode_event, encode_payload, serialize_job

EXPIRED = ErrorEvent(
    code="expired", message="no worker ran the job before its deadline", status="expired"
)
CANCELLED_QUEUED = ErrorEvent(
    code="cancelled", message="cancelled before it started", status="cancelled"
)
REAP_BATCH = 100  # expired jobs handled per script call: bounded work in the admission path
RECHECK_S = 5.0  # a running job past its deadline: look again after this long

_JOB_LUA = f"""
local function end_job(id, event, status, ttl)
  if not redis.call('SET', {lua_key(names.result_key, "id")}, event, 'EX', ttl, 'NX') then
    return false
  end
  local events = {lua_key(names.events_key, "id")}
  redis.call('XADD', events, '*', {lua_string(names.EVENT_FIELD)}, event)
  redis.call('EXPIRE', events, ttl)
  redis.call('HSET', {lua_key(names.job_key, "id")}, {lua_string(JobField.STATUS)}, status)
  local done = {lua_key(names.done_key, "id")}
  redis.call('RPUSH', done, '1')
  redis.call('EXPIRE', done, ttl)
  return true
end
local function is_running(id)
  return redis.call('EXISTS', {lua_key(names.arq_in_progress_key, "id")}) == 1
end
local function drop_queued(queue, deadlines, id)
  if redis.call('ZREM', queue, id) == 0 then return false end
  redis.call('DEL', {lua_key(names.arq_job_key, "id")})
  redis.call('ZREM', deadlines, id)
  return true
end
local function reap_expired(queue, deadlines, now, limit, event, ttl, recheck)
  local ids = redis.call('ZRANGEBYSCORE', deadlines, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do
    if is_running(id) then
      redis.call('ZADD', deadlines, tonumber(now) + tonumber(recheck), id)
    else
      -- Off the queue either way; ended unless it has a result (ARQ may have dropped it
      -- as expired itself, and ARQ writes no event a client would see).
      drop_queued(queue, deadlines, id)
      redis.call('ZREM', deadlines, id)
      end_job(id, event, 'expired', ttl)
    end
  end
  return #ids
end
"""

_SUBMIT = LuaScript(
    keys=(
        "queue",
        "deadlines",
        "arq_job",
        "arq_result",
        "job",
        "idem",
        "bucket",
        "fleet",
        "workers",
        "budget",
    ),
    args=(
        "id",
        "arq_bytes",
        "expires_ms",
        "now_ms",
        "now",
        "deadline",
        "max_depth",
        "ttl",
        "rate",
        "burst",
        "idle_deadline",
        "live_since",
        "expired",
        "reap_limit",
        "recheck",
        "subject",
        "request_id",
        "idle",
        "fingerprint",
        "price",
        "hard_stop",
    ),
    parts=(_JOB_LUA, RATE_LUA, FLEET_LUA),
    body=f"""
-- Returns {{code, value, month's GPU seconds}}: code 1 created (value: id), 0 existing (id),
-- -1 queue full (depth), -2 rate limited (wait), -3 over budget, -4 key reused with another body.
local seconds = '0'
if KEY.budget ~= '' then seconds = redis.call('GET', KEY.budget) or '0' end
if KEY.idem ~= '' then
  -- A replay answers with its job: no budget check, no rate-limit token.
  local existing = redis.call('GET', KEY.idem)
  if existing then
    local id, fingerprint = string.match(existing, '^([^:]*):(.*)$')
    if not id then id, fingerprint = existing, ARG.fingerprint end  -- a key from before
    if fingerprint ~= ARG.fingerprint then return {{-4, id, seconds}} end
    return {{0, id, seconds}}
  end
end
local stop = tonumber(ARG.hard_stop)
if stop > 0 and tonumber(seconds) * tonumber(ARG.price) / 3600 >= stop then
  return {{-3, '', seconds}}
end
local wait = take_token(KEY.bucket, ARG.rate, ARG.burst, ARG.now)
if wait then return {{-2, wait, seconds}} end
reap_expired(KEY.queue, KEY.deadlines, ARG.now, ARG.reap_limit, ARG.expired, ARG.ttl, ARG.recheck)
local depth = redis.call('ZCARD', KEY.queue)
if tonumber(ARG.max_depth) > 0 and depth >= tonumber(ARG.max_depth) then
  -- Refused, but if nothing live serves the queue, ask for a worker: it drains the jobs.
  if KEY.fleet ~= '' and live_workers(KEY.workers, ARG.live_since) == 0 then
    fleet_want(KEY.fleet)
  end
  return {{-1, tostring(depth), seconds}}
end
if redis.call('EXISTS', KEY.arq_job, KEY.arq_result) > 0 then return {{0, ARG.id, seconds}} end
redis.call('PSETEX', KEY.arq_job, ARG.expires_ms, ARG.arq_bytes)
redis.call('ZADD', KEY.queue, ARG.now_ms, ARG.id)
redis.call('ZADD', KEY.deadlines, ARG.deadline, ARG.id)
redis.call('HSET', KEY.job,
  {lua_string(JobField.SUBJECT)}, ARG.subject, {lua_string(JobField.STATUS)}, 'queued',
  {lua_string(JobField.CREATED_AT)}, ARG.now, {lua_string(JobField.DEADLINE)}, ARG.deadline,
  {lua_string(JobField.REQUEST_ID)}, ARG.request_id, {lua_string(JobField.IDLE)}, ARG.idle)
redis.call('EXPIRE', KEY.job, ARG.ttl)
if KEY.idem ~= '' then
  redis.call('SET', KEY.idem, ARG.id .. ':' .. ARG.fingerprint, 'EX', ARG.ttl)
end
if KEY.fleet ~= '' then
  fleet_raise_idle(KEY.fleet, ARG.idle_deadline)
  local state = fleet_state(KEY.fleet)
  if state == 'stopped' or state == 'draining' then fleet_want(KEY.fleet) end
end
return {{1, ARG.id, seconds}}
""",
)

_REAP = LuaScript(
    keys=("queue", "deadlines"),
    args=("now", "limit", "expired", "ttl", "recheck"),
    parts=(_JOB_LUA,),
    body="""
return reap_expired(KEY.queue, KEY.deadlines, ARG.now, ARG.limit, ARG.expired, ARG.ttl,
  ARG.recheck)
""",
)

_CANCEL_QUEUED = LuaScript(
    keys=("queue", "deadlines"),
    args=("id", "event", "ttl"),
    parts=(_JOB_LUA,),
    body="""
-- A queued job (not running) leaves the queue and ends now; a running one is left alone.
if is_running(ARG.id) or not drop_queued(KEY.queue, KEY.deadlines, ARG.id) then return 0 end
end_job(ARG.id, ARG.event, 'cancelled', ARG.ttl)
return 1
""",
)

_FAIL_QUEUED = LuaScript(
    keys=("queue", "deadlines"),
    args=("before_ms", "event", "ttl", "limit"),
    parts=(_JOB_LUA,),
    body=f"""
-- Jobs queued before ``before_ms`` end with ``event`` (the fleet was stopped under them).
local ids = redis.call('ZRANGEBYSCORE', KEY.queue, '-inf', ARG.before_ms, 'LIMIT', 0, ARG.limit)
local ended = 0
for _, id in ipairs(ids) do
  if drop_queued(KEY.queue, KEY.deadlines, id) then
    redis.call('DEL', {lua_key(names.arq_in_progress_key, "id")})
    if end_job(id, ARG.event, 'failed', ARG.ttl) then ended = ended + 1 end
  end
end
return ended
""",
)


class RateLimited(Exception):
    """The subject's token bucket is empty."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"rate limited for {wait_s:.2f} s")
        self.wait_s = wait_s


class QueueFull(Exception):
    """The queue holds as many live jobs as it may."""

    def __init__(self, depth: int) -> None:
        super().__init__(f"queue is full ({depth} jobs waiting or running)")
        self.depth = depth


class OverBudget(Exception):
    """The month's metered GPU seconds reached the hard stop."""

    def __init__(self, gpu_seconds: float) -> None:
        super().__init__(f"{gpu_seconds:.0f} GPU seconds metered this month")
        self.gpu_seconds = gpu_seconds


class IdempotencyKeyReused(Exception):
    """An ``Idempotency-Key`` sent again with a different request body."""

    def __init__(self, job_id: str) -> None:
        super().__init__(
            "this Idempotency-Key was first used with a different request body; "
            "use a new key for a new request"
        )
        self.job_id = job_id


@dataclasses.dataclass(frozen=True, kw_only=True)
class Idempotency:
    """Where a caller's key is kept, and the fingerprint of the body it was first sent with."""

    key: str
    fingerprint: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Submitted:
    """The job a submission refers to, whether this call created it, the month's GPU seconds."""

    job_id: str
    created: bool
    gpu_seconds: float = 0.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Admission:
    """What a submission must pass, besides the budget."""

    max_depth: int
    rate_limit: RateLimit | None
    idle_deadline: float | None  # None: no fleet control, nothing to wake
    live_since: float  # heartbeats newer than this count as a live worker
    budget: BudgetCap | None = None  # None: no budget thresholds


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobView:
    """A job's state as its owner may see it."""

    job_id: str
    status: str
    created_at: float
    deadline: float
    result: GenerateResult | None = None
    error: ErrorEvent | None = None


CancelOutcome = Literal["cancelled", "requested"]


class JobStore:
    """One queue's jobs: submit, read, follow, cancel, expire."""

    def __init__(self, redis: Redis, *, queue_name: str, ttl_s: int) -> None:
        self.redis = redis
        self.queue_name = queue_name
        self.ttl_s = ttl_s
        self._deadlines = names.deadlines_key(queue_name)
        self._expired = encode_event(EXPIRED)

    def idempotency(self, *, subject: str, key: str, body: bytes) -> Idempotency:
        """A caller's key, hashed with its subject (no two callers' keys can meet, whatever
        characters they hold), bound to a fingerprint of the request body."""
        scoped = hashlib.sha256(b"%d:%s:%s" % (len(subject), subject.encode(), key.encode()))
        return Idempotency(
            key=f"{names.KEY_PREFIX}:idem:{scoped.hexdigest()}",
            fingerprint=hashlib.sha256(body).hexdigest()[:32],
        )

    async def submit(
        self, payload: JobPayload, *, admission: Admission, idempotency: Idempotency | None = None
    ) -> Submitted:
        """Admit and enqueue in one round trip.

        Raises ``OverBudget``, ``RateLimited``, ``QueueFull`` or ``IdempotencyKeyReused``.
        """
        now = payload.enqueued_at
        now_ms = int(now * 1000)
        arq_job = serialize_job(
            {
                "t": None,
                "f": names.JOB_FUNCTION,
                "a": [],
                "k": {"payload": encode_payload(payload)},
                "et": now_ms,
            }
        )
        rate = admission.rate_limit
        fleet = admission.idle_deadline is not None
        budget = admission.budget
        code, value, seconds = await _SUBMIT.run(
            self.redis,
            keys={
                "queue": self.queue_name,
                "deadlines": self._deadlines,
                "arq_job": names.arq_job_key(payload.job_id),
                "arq_result": names.arq_result_key(payload.job_id),
                "job": names.job_key(payload.job_id),
                "idem": idempotency.key if idempotency else "",
                "bucket": bucket_key(payload.subject) if rate else "",
                "fleet": names.FLEET_KEY if fleet else "",
                "workers": names.WORKERS_SET,
                "budget": budget.key if budget else "",
            },
            args={
                "id": payload.job_id,
                "arq_bytes": arq_job,
                "expires_ms": max(1, int(payload.deadline * 1000) - now_ms),
                "now_ms": now_ms,
                "now": repr(now),
                "deadline": repr(payload.deadline),
                "max_depth": admission.max_depth,
                "ttl": self.ttl_s,
                "rate": rate.rate if rate else 0,
                "burst": rate.burst if rate else 0,
                "idle_deadline": repr(admission.idle_deadline or 0.0),
                "live_since": repr(admission.live_since),
                "expired": self._expired,
                "reap_limit": REAP_BATCH,
                "recheck": RECHECK_S,
                "subject": payload.subject,
                "request_id": payload.request_id,
                "idle": payload.request.idle,
                "fingerprint": idempotency.fingerprint if idempotency else "",
                "price": repr(budget.hourly_price_usd if budget else 0.0),
                "hard_stop": repr(budget.hard_stop_usd if budget else 0.0),
            },
        )
        code = int(code)
        if code == -4:
            raise IdempotencyKeyReused(as_text(value))
        if code == -3:
            raise OverBudget(float(seconds))
        if code == -2:
            raise RateLimited(float(value))
        if code == -1:
            raise QueueFull(int(value))
        return Submitted(job_id=as_text(value), created=code == 1, gpu_seconds=float(seconds))

    async def reap(self, *, now: float | None = None, limit: int = REAP_BATCH) -> int:
        """End jobs whose deadline passed while no worker ran them; return how many were due."""
        return int(
            await _REAP.run(
                self.redis,
                keys={"queue": self.queue_name, "deadlines": self._deadlines},
                args={
                    "now": repr(time.time() if now is None else now),
                    "limit": limit,
                    "expired": self._expired,
                    "ttl": self.ttl_s,
                    "recheck": RECHECK_S,
                },
            )
        )

    async def fail_queued(self, *, before: float, event: ErrorEvent, limit: int = 1000) -> int:
        """End every job queued before ``before`` with ``event`` (its fleet was stopped)."""
        return int(
            await _FAIL_QUEUED.run(
                self.redis,
                keys={"queue": self.queue_name, "deadlines": self._deadlines},
                args={
                    "before_ms": int(before * 1000),
                    "event": encode_event(event),
                    "ttl": self.ttl_s,
                    "limit": limit,
                },
            )
        )

    async def depth(self) -> int:
        """Live jobs in the queue (waiting or running)."""
        return int(await self.redis.zcard(self.queue_name))

    async def oldest_age(self, *, now: float) -> float:
        """Seconds since the oldest live job was queued (0 when none)."""
        oldest = await self.redis.zrange(self.queue_name, 0, 0, withscores=True)
        return max(0.0, now - oldest[0][1] / 1000.0) if oldest else 0.0

    async def read(self, job_id: str, *, subject: str) -> JobView | None:
        """The job if it is ``subject``'s; ``None`` otherwise (no existence leak)."""
        fields = await self.redis.hgetall(names.job_key(job_id))
        if not fields or as_text(fields.get(JobField.SUBJECT.encode())) != subject:
            return None
        view = JobView(
            job_id=job_id,
            status=as_text(fields.get(JobField.STATUS.encode())) or "queued",
            created_at=float(as_text(fields.get(JobField.CREATED_AT.encode())) or 0),
            deadline=float(as_text(fields.get(JobField.DEADLINE.encode())) or 0),
        )
        final = await self.final(job_id)
        if isinstance(final, DoneEvent):
            cancelled = final.result.finish_reason == "cancelled"
            return dataclasses.replace(
                view, status="cancelled" if cancelled else "succeeded", result=final.result
            )
        if isinstance(final, ErrorEvent):
            return dataclasses.replace(view, status=final.status, error=final)
        if view.status == "queued" and time.time() > view.deadline:
            # Past its deadline and never started: the reaper makes it final within a tick.
            return dataclasses.replace(view, status="expired", error=EXPIRED)
        return view

    async def final(self, job_id: str) -> JobEvent | None:
        """The job's last event, once it has one."""
        raw = await self.redis.get(names.result_key(job_id))
        return decode_event(raw) if raw is not None else None

    async def exists(self, job_id: str) -> bool:
        """Whether Redis still holds the job (a restarted Redis may have lost it)."""
        return bool(await self.redis.exists(names.job_key(job_id)))

    async def cancel(self, job_id: str) -> CancelOutcome:
        """A queued job ends now (``cancelled``); a running one is asked to stop (``requested``)."""
        dropped = await _CANCEL_QUEUED.run(
            self.redis,
            keys={"queue": self.queue_name, "deadlines": self._deadlines},
            args={"id": job_id, "event": encode_event(CANCELLED_QUEUED), "ttl": self.ttl_s},
        )
        if int(dropped) == 1:
            return "cancelled"
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(names.cancel_key(job_id), b"1", ex=self.ttl_s)
            pipe.zadd(names.ARQ_ABORT_SET, {job_id: int(time.time() * 1000)})
            await pipe.execute()
        return "requested"
