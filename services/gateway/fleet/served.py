"""Which model the fleet serves, how much one request can hold, and the last one seen.

Workers say what they serve in their heartbeats. A fleet scaled to zero sends none,
yet its clients must get the same answers then as when it is warm (the same model
names accepted, the same oversized requests refused): their request is what starts
the fleet. So the gateway remembers the last model live workers served, in Redis
(``names.SERVED_MODEL_KEY``, shared by every gateway replica), and answers from it
while no worker is live. A new deployment's first heartbeat replaces it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import msgspec
from redis.asyncio import Redis

from services.gateway.fleet.observe import live_workers
from services.protocol import names
from services.protocol.messages import Heartbeat


class ServedModel(msgspec.Struct, kw_only=True, frozen=True):
    """A model as the gateway knows it from its workers' heartbeats."""

    name: str
    since: float  # when a worker was first seen serving it (OpenAI's ``created``)
    context_length: int | None = None  # prompt plus new tokens one request can hold
    max_token_chars: int | None = None  # the longest vocabulary entry, in characters


@dataclasses.dataclass(frozen=True, kw_only=True)
class Served:
    """What is served: by live workers now, or (``live`` false) the model remembered."""

    model: ServedModel | None
    live: bool
    names: tuple[str, ...] = ()  # every model a live worker serves, freshest first


def _largest(values: Sequence[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def from_heartbeats(beats: Sequence[Heartbeat], *, since: float) -> ServedModel | None:
    """The served model per live heartbeats (freshest first): a ready worker's, else any.

    Its limits are the largest any of its workers reports, so the gateway refuses only
    what no worker could hold (the worker that takes a job still checks it exactly).
    """
    if not beats:
        return None
    name = next((b.model for b in beats if b.ready), beats[0].model)
    same = [b for b in beats if b.model == name]
    return ServedModel(
        name=name,
        since=since,
        context_length=_largest([b.context_length for b in same]),
        max_token_chars=_largest([b.max_token_chars for b in same]),
    )


RECHECK_S = 10.0  # how long this process trusts its copy of the remembered model


class ServedModels:
    """Reads what live workers serve, and remembers it for when none is live."""

    def __init__(
        self, redis: Redis, *, max_age_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = redis
        self._max_age_s = max_age_s
        self._clock = clock
        self._stored: ServedModel | None = None  # what this process last read or wrote
        self._stored_at = -RECHECK_S  # when (monotonic); re-read after a while, in case
        # Redis lost the key (a restart without persistence) or another replica changed it

    async def _load(self) -> ServedModel | None:
        raw = await self._redis.get(names.SERVED_MODEL_KEY)
        self._stored = msgspec.msgpack.decode(raw, type=ServedModel) if raw else None
        self._stored_at = time.monotonic()
        return self._stored

    async def read(self) -> Served:
        """The served model now (``live``), or the one remembered (``None``: never seen)."""
        now = self._clock()
        beats = await live_workers(self._redis, max_age_s=self._max_age_s, now=now)
        seen = from_heartbeats(beats, since=now)
        if seen is None:
            return Served(model=await self._load(), live=False)
        fresh = time.monotonic() - self._stored_at < RECHECK_S
        stored = self._stored if fresh else await self._load()
        if stored is not None and stored.name == seen.name:
            seen = msgspec.structs.replace(seen, since=stored.since)
        if seen != stored:
            await self._redis.set(names.SERVED_MODEL_KEY, msgspec.msgpack.encode(seen))
            self._stored, self._stored_at = seen, time.monotonic()
        live_names = tuple(dict.fromkeys(b.model for b in beats if b.ready))
        return Served(model=seen, live=True, names=live_names)
