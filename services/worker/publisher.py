"""Writes a job's events to its Redis Stream; the final result exactly once.

Redis may be away for a while (a restart, a failover): token events wait in order
until it answers, and the final write is retried until it lands. A job whose
events wait longer than the delivery timeout learns it (``DeliveryFailed``) and
ends with an explicit error rather than streaming into nowhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis

from services.protocol import names
from services.protocol.messages import DoneEvent, ErrorEvent, JobEvent, StatusEvent, TokenEvent
from services.protocol.names import JobField
from services.protocol.serializer import decode_event, encode_event
from services.worker.outage import DeliveryFailed, Outage, retry_redis
from services.worker.settings import WorkerSettings

log = logging.getLogger("tinyllama.worker.publisher")
T = TypeVar("T")

BATCH_MAX = 1_000  # entries per pipeline: the backlog after an outage goes out in slices
PENDING_MAX = 100_000  # entries held while Redis is away (~100 bytes each): then refuse


class StreamWriter:
    """Token events of every job, written in one pipeline per event-loop pass.

    With a full batch each step yields a token for every sequence; one round trip
    per token per job would make the event loop, not the model, the bottleneck.
    One task writes, oldest entry first, so events of a stream stay in order; an
    entry leaves the queue only once Redis took it (a batch whose reply was lost is
    written again: readers skip what they saw, by ``seq`` and ``offset``).
    """

    def __init__(
        self,
        redis: Redis,
        *,
        delivery_timeout_s: float = WorkerSettings.delivery_timeout_s,
        max_pending: int = PENDING_MAX,
    ) -> None:
        self._redis = redis
        self.delivery_timeout_s = delivery_timeout_s
        self._max_pending = max_pending
        self._pending: deque[tuple[str, bytes]] = deque()
        self._appended = 0  # entries ever queued
        self._written = 0  # entries ever taken by Redis
        self._progress = asyncio.Event()  # set (and replaced) whenever entries were written
        self._task: asyncio.Task[None] | None = None
        self._outage = Outage("event stream writes", logger=log)

    def append(self, key: str, data: bytes) -> None:
        """Queue one stream entry; it is written within this loop pass or the next.

        Raises ``DeliveryFailed`` instead when Redis has taken nothing for longer than
        the delivery timeout, or when ``max_pending`` entries already wait for it.
        """
        if self._outage.down_for > self.delivery_timeout_s:
            raise DeliveryFailed(f"Redis took no events for {self._outage.down_for:.1f} s")
        if len(self._pending) >= self._max_pending:
            raise DeliveryFailed(f"{len(self._pending)} events already wait for Redis")
        self._pending.append((key, data))
        self._appended += 1
        self._start()

    async def flush(self, *, give_up_after_s: float | None = None) -> None:
        """Wait until everything queued so far is written.

        With ``give_up_after_s``, raise ``DeliveryFailed`` once Redis has been away that
        long; without, wait as long as it takes.
        """
        target = self._appended
        while self._written < target:
            self._start()
            progress = self._progress
            if give_up_after_s is None:
                await progress.wait()
                continue
            left = give_up_after_s - self._outage.down_for
            if left <= 0:
                raise DeliveryFailed(f"Redis took no events for {self._outage.down_for:.1f} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), timeout=left)

    async def close(self, *, timeout_s: float) -> None:
        """Give queued entries up to ``timeout_s`` to land, then stop writing."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), timeout=timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pending:
            log.warning("stopped with %d events not written", len(self._pending))

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Write queued entries, oldest first, until none is left; never raises."""
        while self._pending:
            batch = list(itertools.islice(self._pending, BATCH_MAX))
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key, data in batch:
                        pipe.xadd(key, {names.EVENT_FIELD: data})
                    replies = await pipe.execute(raise_on_error=False)
            # Whatever went wrong, the batch stays queued and is tried again: this task
            # must not die (its exception would be "never retrieved", its events lost).
            except Exception as exc:
                await asyncio.sleep(self._outage.failed(exc))
                continue
            self._outage.answered()
            for (key, _), reply in zip(batch, replies, strict=True):
                if isinstance(reply, Exception):  # a command error: writing again cannot help
                    log.error("Redis refused an event of %s: %s", key, reply)
            for _ in batch:
                self._pending.popleft()
            self._written += len(batch)
            self._progress.set()
            self._progress = asyncio.Event()


class EventPublisher:
    """Appends events for one job; ``finish`` writes the result key with NX, then the event.

    Each write rides out a Redis blip: ``publish`` and the reads give up (``DeliveryFailed``)
    once Redis has been away for the delivery timeout, ``finish`` keeps trying until Redis
    answers (the job's timeout bounds it), so a job that ended during a blip still ends.
    """

    def __init__(
        self,
        redis: Redis,
        job_id: str,
        *,
        ttl_s: int,
        queue_name: str = names.QUEUE_NAME,
        writer: StreamWriter | None = None,
        delivery_timeout_s: float = WorkerSettings.delivery_timeout_s,
    ) -> None:
        self._redis = redis
        self.job_id = job_id
        self._queue = queue_name
        self._deadlines = names.deadlines_key(queue_name)
        self._ttl_s = ttl_s
        self._key = names.events_key(job_id)
        self._writer = writer
        self.delivery_timeout_s = delivery_timeout_s

    async def publish(self, event: JobEvent) -> None:
        """Append one event; token events go through the shared batched writer."""
        if isinstance(event, TokenEvent) and self._writer is not None:
            self._writer.append(self._key, encode_event(event))
            return
        if self._writer is not None:
            await self._writer.flush(give_up_after_s=self.delivery_timeout_s)

        async def write() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self._key, {names.EVENT_FIELD: encode_event(event)})
                pipe.expire(self._key, self._ttl_s)  # set once here: a stream never lives forever
                if isinstance(event, StatusEvent):
                    pipe.hset(names.job_key(self.job_id), JobField.STATUS, event.status)
                await pipe.execute()

        await self._retry(write, "event")

    async def finish(self, event: DoneEvent | ErrorEvent) -> bool:
        """Write the final event once; False if an earlier run already did."""
        if isinstance(event, DoneEvent):
            status = "cancelled" if event.result.finish_reason == "cancelled" else "succeeded"
        else:
            status = event.status
        data = encode_event(event)
        result = names.result_key(self.job_id)

        async def claim() -> bool:
            if await self._redis.set(result, data, ex=self._ttl_s, nx=True):
                return True
            return await self._redis.get(result) == data  # ours, from a try whose reply was lost

        if not await retry_redis(claim, what=f"job {self.job_id}: result", logger=log):
            return False
        if self._writer is not None:
            await self._writer.flush()  # every token lands before the final event
        latch = names.done_key(self.job_id)

        async def write() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self._key, {names.EVENT_FIELD: data})
                pipe.expire(self._key, self._ttl_s)
                pipe.hset(names.job_key(self.job_id), JobField.STATUS, status)
                pipe.zrem(self._deadlines, self.job_id)  # ended: nothing left for the reaper
                # Off the queue now, not when ARQ's own bookkeeping gets to it: a client that
                # saw its job end must not find the queue full of it.
                pipe.zrem(self._queue, self.job_id)
                pipe.rpush(latch, b"1")  # after the result key: a woken waiter finds it
                pipe.expire(latch, self._ttl_s)
                await pipe.execute()

        await retry_redis(write, what=f"job {self.job_id}: final event", logger=log)
        return True

    async def previous_tokens(self) -> tuple[list[int], int, int]:
        """What an earlier run of this job already published: ids, characters shown, events.

        A re-run resumes from there instead of repeating (or contradicting) it.
        """
        ids: list[int] = []
        shown = 0
        count = 0
        for _, fields in await self._retry(lambda: self._redis.xrange(self._key), "read"):
            event = decode_event(fields[names.EVENT_FIELD.encode()])
            if isinstance(event, TokenEvent) and event.seq >= count:  # else: a batch sent twice
                ids.extend(event.token_ids)
                shown = max(shown, event.offset + len(event.text))
                count = event.seq + 1
        return ids, shown, count

    async def final(self) -> JobEvent | None:
        """The job's result event, if one was written."""
        raw = await self._retry(lambda: self._redis.get(names.result_key(self.job_id)), "read")
        return decode_event(raw) if raw is not None else None

    async def _retry(self, op: Callable[[], Awaitable[T]], what: str) -> T:
        return await retry_redis(
            op,
            what=f"job {self.job_id}: {what}",
            give_up_after_s=self.delivery_timeout_s,
            logger=log,
        )
