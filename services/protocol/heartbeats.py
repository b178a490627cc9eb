"""Worker heartbeats in Redis: written by workers, read by the gateway, in one place.

A heartbeat is one expiring key per worker plus an index of workers by the time
they last spoke (``WORKERS_SET``), so "who is alive" is one range query.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from services.protocol import names
from services.protocol.messages import Heartbeat
from services.protocol.serializer import decode_heartbeat, encode_heartbeat

_FORGET_AFTER_S = 3600  # index entries older than this are dropped


async def send_heartbeat(redis: Redis, beat: Heartbeat, *, ttl_s: float) -> None:
    """Store the heartbeat (expiring) and index the worker by time."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(names.heartbeat_key(beat.worker_id), encode_heartbeat(beat), px=int(ttl_s * 1000))
        pipe.zadd(names.WORKERS_SET, {beat.worker_id: beat.sent_at})
        pipe.zremrangebyscore(names.WORKERS_SET, "-inf", beat.sent_at - _FORGET_AFTER_S)
        await pipe.execute()


async def withdraw(redis: Redis, *, worker_id: str) -> None:
    """Say goodbye: a stopping worker must not look ready."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.delete(names.heartbeat_key(worker_id))
        pipe.zrem(names.WORKERS_SET, worker_id)
        await pipe.execute()


async def live_heartbeats(
    redis: Redis, *, max_age_s: float, now: float | None = None
) -> list[Heartbeat]:
    """The latest heartbeat of every worker that spoke within ``max_age_s``."""
    now = time.time() if now is None else now
    ids = await redis.zrangebyscore(names.WORKERS_SET, now - max_age_s, "+inf")
    if not ids:
        return []
    raw = await redis.mget([names.heartbeat_key(i.decode()) for i in ids])
    beats = [decode_heartbeat(r) for r in raw if r is not None]
    return [b for b in beats if now - b.sent_at <= max_age_s]
