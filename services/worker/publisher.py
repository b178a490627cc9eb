"""Writes a job's events to its Redis Stream; the final result exactly once."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from services.protocol import names
from services.protocol.messages import DoneEvent, ErrorEvent, JobEvent, StatusEvent, TokenEvent
from services.protocol.names import JobField
from services.protocol.serializer import decode_event, encode_event


class StreamWriter:
    """Token events of every job, written in one pipeline per event-loop pass.

    With a full batch each step yields a token for every sequence; one round trip
    per token per job would make the event loop, not the model, the bottleneck.
    Flushes run one at a time, so events of a stream stay in order.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._pending: list[tuple[str, bytes]] = []
        self._lock = asyncio.Lock()
        self._scheduled: asyncio.Task[None] | None = None

    def append(self, key: str, data: bytes) -> None:
        """Queue one stream entry; it is written within this loop pass or the next."""
        self._pending.append((key, data))
        if self._scheduled is None or self._scheduled.done():
            self._scheduled = asyncio.get_running_loop().create_task(self.flush())

    async def flush(self) -> None:
        """Write everything queued so far (waits for a flush in progress first)."""
        async with self._lock:
            if not self._pending:
                return
            batch, self._pending = self._pending, []
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, data in batch:
                    pipe.xadd(key, {names.EVENT_FIELD: data})
                await pipe.execute()


class EventPublisher:
    """Appends events for one job; ``finish`` writes the result key with NX, then the event."""

    def __init__(
        self,
        redis: Redis,
        job_id: str,
        *,
        ttl_s: int,
        queue_name: str = names.QUEUE_NAME,
        writer: StreamWriter | None = None,
    ) -> None:
        self._redis = redis
        self._job_id = job_id
        self._deadlines = names.deadlines_key(queue_name)
        self._ttl_s = ttl_s
        self._key = names.events_key(job_id)
        self._writer = writer

    async def publish(self, event: JobEvent) -> None:
        """Append one event; token events go through the shared batched writer."""
        if isinstance(event, TokenEvent) and self._writer is not None:
            self._writer.append(self._key, encode_event(event))
            return
        if self._writer is not None:
            await self._writer.flush()
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(self._key, {names.EVENT_FIELD: encode_event(event)})
            pipe.expire(self._key, self._ttl_s)  # set once here: a stream never lives forever
            if isinstance(event, StatusEvent):
                pipe.hset(names.job_key(self._job_id), JobField.STATUS, event.status)
            await pipe.execute()

    async def finish(self, event: DoneEvent | ErrorEvent) -> bool:
        """Write the final event once; False if an earlier run already did."""
        if isinstance(event, DoneEvent):
            status = "cancelled" if event.result.finish_reason == "cancelled" else "succeeded"
        else:
            status = event.status
        won = await self._redis.set(
            names.result_key(self._job_id), encode_event(event), ex=self._ttl_s, nx=True
        )
        if not won:
            return False
        if self._writer is not None:
            await self._writer.flush()  # every token lands before the final event
        latch = names.done_key(self._job_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(self._key, {names.EVENT_FIELD: encode_event(event)})
            pipe.expire(self._key, self._ttl_s)
            pipe.hset(names.job_key(self._job_id), JobField.STATUS, status)
            pipe.zrem(self._deadlines, self._job_id)  # ended: nothing left for the reaper
            pipe.rpush(latch, b"1")  # after the result key: a woken waiter finds it
            pipe.expire(latch, self._ttl_s)
            await pipe.execute()
        return True

    async def previous_tokens(self) -> tuple[list[int], int, int]:
        """What an earlier run of this job already published: ids, characters shown, events.

        A re-run resumes from there instead of repeating (or contradicting) it.
        """
        ids: list[int] = []
        shown = 0
        count = 0
        for _, fields in await self._redis.xrange(self._key):
            event = decode_event(fields[names.EVENT_FIELD.encode()])
            if isinstance(event, TokenEvent):
                ids.extend(event.token_ids)
                shown = max(shown, event.offset + len(event.text))
                count = max(count, event.seq + 1)
        return ids, shown, count

    async def final(self) -> JobEvent | None:
        """The job's result event, if one was written."""
        raw = await self._redis.get(names.result_key(self._job_id))
        return decode_event(raw) if raw is not None else None
