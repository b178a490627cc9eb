"""Who may put work on the queue, and how much: rate limit and queue bound.

The rate limit is a token bucket in Redis (one Lua call), so it holds across
gateway replicas; the queue bound is checked inside the submit script itself,
so two replicas cannot both squeeze in the last slot.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from services.gateway import jobs
from services.gateway.problems import Problem
from services.gateway.settings import GatewaySettings
from services.protocol import names
from services.protocol.messages import JobPayload

_TOKEN_BUCKET = """
-- KEYS: 1 bucket hash. ARGV: 1 rate per s, 2 burst, 3 now (s, float)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return {allowed, tostring(wait)}
"""


def rate_key(subject: str) -> str:
    """The token bucket of one subject."""
    return f"{names.KEY_PREFIX}:rate:{subject}"


class Admission:
    """Rate limit per subject, then a bounded submit."""

    def __init__(self, *, redis: Redis, settings: GatewaySettings) -> None:
        self._redis = redis
        self._settings = settings
        self._burst = max(1.0, settings.rate_limit)

    async def admit(self, *, subject: str) -> None:
        """Take one token from the subject's bucket or raise 429 with ``Retry-After``."""
        allowed, wait = await self._redis.eval(
            _TOKEN_BUCKET, 1, rate_key(subject), self._settings.rate_limit, self._burst, time.time()
        )
        if int(allowed) != 1:
            raise Problem(
                429,
                "rate-limited",
                "Too many requests",
                detail=f"limit is {self._settings.rate_limit:g} requests per second per user",
                retry_after=float(wait),
            )

    async def submit(self, payload: JobPayload, *, idempotency_key: str | None) -> jobs.Submitted:
        """Enqueue, honouring the idempotency key; a full queue is a 429, not a backlog."""
        idem = None
        if idempotency_key:
            if len(idempotency_key) > 255:
                raise Problem(
                    400,
                    "invalid-idempotency-key",
                    "Idempotency-Key is too long",
                    detail="at most 255 characters",
                )
            idem = jobs.idempotency_key(subject=payload.subject, key=idempotency_key)
        try:
            return await jobs.submit_job(
                self._redis,
                payload,
                queue_name=self._settings.queue_name,
                max_depth=self._settings.max_queue_depth,
                ttl_s=self._settings.result_ttl_s,
                idempotency=idem,
            )
        except jobs.QueueFull as full:
            raise Problem(
                429, "queue-full", "The queue is full", detail=str(full), retry_after=5.0
            ) from None
