"""Short leases on running jobs, so a crashed worker's jobs run again in seconds.

ARQ marks a running job with its in-progress key (``names.arq_in_progress_key``)
and only lets another worker take it once that key expires: by default after the
longest job timeout plus 10 s (over ten minutes here). A live worker instead keeps the
key on a short lease and renews it with every heartbeat; when the worker
dies (SIGKILL, lost instance) the lease runs out and another worker resumes
the job from the tokens already published.
"""

from __future__ import annotations

import contextlib

from redis.asyncio import Redis

from services.protocol import names
from services.worker.outage import REDIS_DOWN


class Leases:
    """The jobs this worker runs, and their renewals."""

    def __init__(self, *, lease_s: float) -> None:
        self.lease_ms = int(lease_s * 1000)
        self._held: set[str] = set()

    async def take(self, redis: Redis, job_id: str) -> None:
        """Shorten ARQ's in-progress mark of ``job_id`` to one lease.

        With Redis away the next renewal shortens it: the job need not wait for that.
        """
        self._held.add(job_id)
        with contextlib.suppress(*REDIS_DOWN):
            await redis.pexpire(names.arq_in_progress_key(job_id), self.lease_ms)

    def release(self, job_id: str) -> None:
        """Stop renewing (ARQ deletes the mark itself when the job ends)."""
        self._held.discard(job_id)

    async def renew(self, redis: Redis) -> None:
        """Extend every held lease by one more lease period."""
        if not self._held:
            return
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in self._held:
                pipe.pexpire(names.arq_in_progress_key(job_id), self.lease_ms)
            await pipe.execute()

    def __len__(self) -> int:
        return len(self._held)
