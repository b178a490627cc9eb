"""One reader per gateway process for every job's events, fanned out to its followers.

A stream or a waiting request used to hold its own Redis connection in a blocking
read for minutes: 60 followers of one job held 60 connections, and the pool had no
bound. Here one task reads the event streams of every followed job with a single
``XREAD BLOCK`` and hands each entry to the followers of its job, so a process holds
one blocking connection whatever its load (the design of Redis Streams consumers
everywhere: one reader, many in-process consumers).

A new follower of a job the reader is not watching wakes it with one entry on this
process's own wake stream, which every read includes: no follower waits for the
current block to time out. When Redis fails, every follower is told at once
(``HubLost``), so its client's stream ends cleanly instead of hanging; the reader
backs off and carries on for new followers when Redis answers again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from services.protocol import names
from services.protocol.messages import JobEvent
from services.protocol.scripts import as_text
from services.protocol.serializer import decode_event

log = logging.getLogger("tinyllama.gateway.hub")
READ_COUNT = 256  # entries per stream per read
WAKE_TTL_S = 3600
BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0)


class HubLost(RedisConnectionError):
    """The reader lost Redis: what a follower had not yet received may never come.

    A ``ConnectionError`` like any other loss of Redis: a request waiting on the hub
    gets the same 503 with ``Retry-After`` as one whose own command failed.
    """


class TooManyStreams(Exception):
    """A job, or a caller, already has as many open streams here as it may."""

    def __init__(self, *, what: str, limit: int) -> None:
        super().__init__(f"{what} already has {limit} open streams on this server")
        self.limit = limit


Entry = tuple[str, JobEvent]


def _id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclasses.dataclass(eq=False)
class _Follower:
    job_id: str
    subject: str | None
    cursor: str
    inbox: asyncio.Queue[list[Entry] | HubLost] = dataclasses.field(default_factory=asyncio.Queue)


class EventHub:
    """Follow jobs' event streams through one shared blocking reader."""

    def __init__(
        self,
        redis: Redis,
        *,
        block_ms: int = 1000,
        max_per_job: int = 0,
        max_per_subject: int = 0,
    ) -> None:
        self._redis = redis
        self._block_ms = block_ms
        self._max_per_job = max_per_job
        self._max_per_subject = max_per_subject
        self._followers: dict[str, set[_Follower]] = collections.defaultdict(set)
        self._streams_of: collections.Counter[str] = collections.Counter()
        self._wake_key = f"{names.KEY_PREFIX}:hub:{os.urandom(8).hex()}"
        self._wake_cursor = "0-0"
        self._watching: frozenset[str] = frozenset()
        self._waking = False
        self._changed = asyncio.Event()
        self._wakers: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def followers(self) -> int:
        """Followers right now (a gauge for tests and metrics)."""
        return sum(len(group) for group in self._followers.values())

    # ------------------------------------------------------------------ following

    @contextlib.asynccontextmanager
    async def follow(
        self, job_id: str, *, subject: str | None = None, after: str = "0-0"
    ) -> AsyncIterator[Inbox]:
        """Receive ``job_id``'s events after ``after`` until the block ends.

        With a ``subject`` the follower is a client's stream and counts against the
        per-job and per-caller stream caps (``TooManyStreams``).
        """
        follower = self._add(job_id, subject=subject, after=after)
        try:
            yield Inbox(follower)
        finally:
            self._remove(follower)

    def close(self) -> None:
        """The server is shutting down: every follower is told now, and no new one may join.

        A stream then ends at once with an event its client can act on (the job goes
        on: ``GET /jobs/{id}``) instead of being held open until the server's shutdown
        timeout cuts it mid-response.
        """
        self._closed = True
        self._lose_all(reason="the server is shutting down")

    def _add(self, job_id: str, *, subject: str | None, after: str) -> _Follower:
        if self._closed:
            raise HubLost("the server is shutting down")
        if subject is not None:
            streams = sum(1 for f in self._followers.get(job_id, ()) if f.subject is not None)
            if self._max_per_job and streams >= self._max_per_job:
                raise TooManyStreams(what="this job", limit=self._max_per_job)
            if self._max_per_subject and self._streams_of[subject] >= self._max_per_subject:
                raise TooManyStreams(what="this caller", limit=self._max_per_subject)
            self._streams_of[subject] += 1
        follower = _Follower(job_id=job_id, subject=subject, cursor=after)
        self._followers[job_id].add(follower)
        self._changed.set()
        if job_id not in self._watching:
            self._wake()
        return follower

    def _remove(self, follower: _Follower) -> None:
        group = self._followers.get(follower.job_id)
        if group is not None:
            group.discard(follower)
            if not group:
                del self._followers[follower.job_id]
        if follower.subject is not None:
            self._streams_of[follower.subject] -= 1
            if self._streams_of[follower.subject] <= 0:
                del self._streams_of[follower.subject]

    def _wake(self) -> None:
        """Interrupt a blocked read so it includes a newly followed job."""
        if self._waking or not self._watching:
            return  # a wake is on its way, or the reader is not blocked on anything
        self._waking = True
        task = asyncio.get_running_loop().create_task(self._send_wake())
        self._wakers.add(task)
        task.add_done_callback(self._wakers.discard)

    async def _send_wake(self) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self._wake_key, {"w": b"1"}, maxlen=1, approximate=False)
                pipe.expire(self._wake_key, WAKE_TTL_S)
                await pipe.execute()
        except RedisError:
            pass  # the reader's own read fails too, and tells every follower
        finally:
            self._waking = False

    # ------------------------------------------------------------------ reading

    async def run(self) -> None:
        """Read and fan out until cancelled; tell followers when Redis fails."""
        failures = 0
        while True:
            if not self._followers:
                self._changed.clear()
                await self._changed.wait()
                continue
            try:
                await self._read_once()
                if failures:
                    log.info("event reader recovered after %d failed reads", failures)
                failures = 0
            except (RedisError, OSError) as exc:
                if failures == 0:
                    log.warning("event reader lost Redis: %s", type(exc).__name__)
                failures += 1
                self._watching = frozenset()
                self._lose_all()
                await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S)) - 1])

    async def _read_once(self) -> None:
        jobs_of: dict[str, str] = {}
        streams: dict[str, str] = {}
        for job_id, group in self._followers.items():
            key = names.events_key(job_id)
            jobs_of[key] = job_id
            streams[key] = min((f.cursor for f in group), key=_id)
        streams[self._wake_key] = self._wake_cursor
        self._watching = frozenset(self._followers)
        try:
            reply = await self._redis.xread(streams, count=READ_COUNT, block=self._block_ms)
        finally:
            self._watching = frozenset()
        field = names.EVENT_FIELD.encode()
        for raw_key, entries in reply or ():
            key = as_text(raw_key)
            if key == self._wake_key:
                self._wake_cursor = as_text(entries[-1][0])
                continue
            if key in jobs_of:
                decoded = [(as_text(i), decode_event(data[field])) for i, data in entries]
                self._deliver(jobs_of[key], decoded)

    def _deliver(self, job_id: str, entries: list[Entry]) -> None:
        for follower in self._followers.get(job_id, ()):
            mine = _id(follower.cursor)
            fresh = [e for e in entries if _id(e[0]) > mine]
            if fresh:
                follower.cursor = fresh[-1][0]
                follower.inbox.put_nowait(fresh)

    def _lose_all(self, *, reason: str = "lost contact with the queue") -> None:
        for group in self._followers.values():
            for follower in group:
                follower.inbox.put_nowait(HubLost(reason))


class Inbox:
    """What one follower receives: batches of entries, in order."""

    def __init__(self, follower: _Follower) -> None:
        self._follower = follower

    async def next(self, *, timeout_s: float) -> list[Entry]:
        """The next batch (``[]`` if none came within ``timeout_s``); ``HubLost`` raised."""
        try:
            async with asyncio.timeout(max(0.0, timeout_s)):
                item = await self._follower.inbox.get()
        except TimeoutError:
            return []
        if isinstance(item, HubLost):
            raise item
        return item
