"""Who may put work on the queue, and how much: rate limit, queue bound, idempotency.

All of it happens in the one script that enqueues (``jobs.submit_job``): the
rate limit holds across gateway replicas because the bucket lives in Redis,
and two replicas cannot both squeeze into the queue's last slot.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from services.gateway import jobs
from services.gateway.problems import Problem
from services.gateway.settings import GatewaySettings
from services.protocol.messages import JobPayload

MAX_IDEMPOTENCY_KEY = 255


class Admission:
    """Rate limit per subject, bounded queue, idempotent submit, idle deadline: one call."""

    def __init__(self, *, redis: Redis, settings: GatewaySettings) -> None:
        self._redis = redis
        self._settings = settings
        self._rate = jobs.RateLimit(rate=settings.rate_limit, burst=max(1.0, settings.rate_limit))

    async def submit(self, payload: JobPayload, *, idempotency_key: str | None) -> jobs.Submitted:
        """Admit and enqueue, or raise a 429 problem (rate limit or full queue)."""
        idem = None
        if idempotency_key:
            if len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
                raise Problem(
                    400,
                    "invalid-idempotency-key",
                    "Idempotency-Key is too long",
                    detail=f"at most {MAX_IDEMPOTENCY_KEY} characters",
                )
            idem = jobs.idempotency_key(subject=payload.subject, key=idempotency_key)
        idle_deadline = None
        if self._settings.fleet != "none":
            idle_deadline = time.time() + payload.request.idle * self._settings.idle_unit_s
        try:
            return await jobs.submit_job(
                self._redis,
                payload,
                queue_name=self._settings.queue_name,
                max_depth=self._settings.max_queue_depth,
                ttl_s=self._settings.result_ttl_s,
                idempotency=idem,
                rate_limit=self._rate,
                idle_deadline=idle_deadline,
            )
        except jobs.RateLimited as limited:
            raise Problem(
                429,
                "rate-limited",
                "Too many requests",
                detail=f"limit is {self._settings.rate_limit:g} requests per second per user",
                retry_after=limited.wait_s,
            ) from None
        except jobs.QueueFull as full:
            raise Problem(
                429, "queue-full", "The queue is full", detail=str(full), retry_after=5.0
            ) from None
