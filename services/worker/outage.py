"""Redis outages the worker rides out: which errors mean "Redis is away", and waiting for it.

A Redis restart or failover must not take down a worker that holds a warm model:
every loop that talks to Redis (queue poll, heartbeats, event writes, a job's
end) retries these errors with a backoff, and says so once per outage, not once
per attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

T = TypeVar("T")

# Away, not wrong: a refused or dropped connection, a timeout (``OSError`` covers the
# builtin ``TimeoutError`` and ``ConnectionError``), Redis still loading its data
# (a ``ConnectionError``), a replica not yet promoted after a failover, or a connection
# dropped inside ARQ's ``WATCH`` (redis-py reports that as a ``WatchError``; ARQ handles
# the real, concurrent kind itself).
REDIS_DOWN: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    WatchError,
    OSError,
)

FIRST_DELAY_S = 0.1
MAX_DELAY_S = 5.0

log = logging.getLogger("tinyllama.worker.outage")


class DeliveryFailed(Exception):
    """Redis did not take a job's writes in time: the job ends ``delivery_failed``."""


class Outage:
    """One caller's view of Redis being away: a warning when it starts, a line when it ends.

    ``failed`` returns how long to wait before the next attempt: 0.1 s, doubling to 5 s.
    """

    def __init__(self, what: str, *, logger: logging.Logger = log) -> None:
        self.what = what
        self._log = logger
        self._since: float | None = None
        self._delay = FIRST_DELAY_S

    @property
    def down_for(self) -> float:
        """Seconds since the first failed attempt of this outage (0 while Redis answers)."""
        return 0.0 if self._since is None else time.monotonic() - self._since

    def failed(self, exc: BaseException) -> float:
        """Note a failed attempt; return the seconds to wait before the next one."""
        if self._since is None:
            self._since = time.monotonic()
            self._delay = FIRST_DELAY_S
            self._log.warning(
                "%s: Redis unavailable, retrying (%s: %s)", self.what, type(exc).__name__, exc
            )
        else:
            self._delay = min(MAX_DELAY_S, self._delay * 2)
        return self._delay

    def answered(self) -> None:
        """Redis answered: end the outage, if there was one."""
        if self._since is not None:
            self._log.info("%s: Redis answers again after %.1f s", self.what, self.down_for)
            self._since = None


async def retry_redis(
    op: Callable[[], Awaitable[T]],
    *,
    what: str,
    give_up_after_s: float | None = None,
    logger: logging.Logger = log,
) -> T:
    """``await op()`` until Redis answers; ``DeliveryFailed`` once it was away ``give_up_after_s``.

    ``op`` must be safe to repeat: a write whose reply was lost is written again.
    Without ``give_up_after_s`` it waits as long as it takes (cancel it to stop).
    """
    outage = Outage(what, logger=logger)
    while True:
        try:
            result = await op()
        except REDIS_DOWN as exc:
            delay = outage.failed(exc)
            if give_up_after_s is not None:
                left = give_up_after_s - outage.down_for
                if left <= 0:
                    raise DeliveryFailed(
                        f"{what}: Redis did not answer for {outage.down_for:.1f} s"
                    ) from exc
                delay = min(delay, left)
            await asyncio.sleep(delay)
        else:
            outage.answered()
            return result
