"""What the fleet controller (and /gpu, /ready, /metrics) see: queue, workers, budget."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from services.gateway.billing.budget import BudgetGate
from services.gateway.fleet.backends import FleetBackend
from services.gateway.fleet.rules import Observation
from services.gateway.jobs.store import JobStore
from services.protocol.heartbeats import live_heartbeats
from services.protocol.messages import Heartbeat


async def live_workers(
    redis: Redis, *, max_age_s: float, now: float | None = None
) -> list[Heartbeat]:
    """Workers that sent a heartbeat within ``max_age_s``, freshest first."""
    beats = await live_heartbeats(redis, max_age_s=max_age_s, now=now)
    return sorted(beats, key=lambda b: -b.sent_at)


async def observe(
    *,
    jobs: JobStore,
    backend: FleetBackend,
    budget: BudgetGate,
    heartbeat_max_age_s: float,
    now: float | None = None,
) -> Observation:
    """One consistent-enough look at everything the state machine decides on."""
    now = time.time() if now is None else now
    workers = await live_workers(jobs.redis, max_age_s=heartbeat_max_age_s, now=now)
    over_budget = budget.enabled and (await budget.read()).status == "exhausted"
    return Observation(
        now=now,
        queued=await jobs.depth(),
        active=sum(w.active_jobs for w in workers),
        ready_workers=sum(1 for w in workers if w.ready),
        backend_running=await backend.is_running(),
        over_budget=over_budget,
    )
