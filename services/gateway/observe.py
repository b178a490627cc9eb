"""What the fleet controller (and /gpu, /metrics) see: queue, workers, budget."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from services.gateway.fleet import Observation
from services.gateway.fleet_backends import FleetBackend
from services.gateway.readiness import live_workers
from services.gateway.settings import GatewaySettings
from services.gateway.usage import read_budget


async def observe(redis: Redis, backend: FleetBackend, *, settings: GatewaySettings) -> Observation:
    """One consistent-enough look at everything the state machine decides on."""
    workers = await live_workers(redis, max_age_s=settings.heartbeat_max_age_s)
    budget = await read_budget(
        redis,
        now=time.time(),
        price=settings.gpu_hourly_price_usd,
        warn_usd=settings.budget_warn_usd,
        hard_stop_usd=settings.budget_hard_stop_usd,
    )
    return Observation(
        now=time.time(),
        queued=int(await redis.zcard(settings.queue_name)),
        active=sum(w.active_jobs for w in workers),
        ready_workers=sum(1 for w in workers if w.ready),
        backend_running=await backend.is_running(),
        over_budget=budget.status == "exhausted",
    )
