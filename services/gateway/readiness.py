"""Which workers are alive, read from their heartbeats."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from services.gateway.views import WorkerView
from services.protocol import names
from services.protocol.messages import Heartbeat
from services.protocol.serializer import decode_heartbeat


async def live_workers(redis: Redis, *, max_age_s: float) -> list[WorkerView]:
    """Workers whose last heartbeat is younger than ``max_age_s``."""
    now = time.time()
    ids = await redis.zrangebyscore(names.WORKERS_SET, now - max_age_s, "+inf")
    if not ids:
        return []
    raw = await redis.mget([names.heartbeat_key(i.decode()) for i in ids])
    beats: list[Heartbeat] = [decode_heartbeat(r) for r in raw if r is not None]
    return [
        WorkerView(
            id=b.worker_id,
            model=b.model,
            device=b.device,
            ready=b.ready,
            active_jobs=b.active_jobs,
            capacity=b.capacity,
            age_s=round(max(0.0, now - b.sent_at), 3),
            demo_model=b.demo_model,
        )
        for b in beats
        if now - b.sent_at <= max_age_s
    ]
