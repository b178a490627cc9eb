"""Every queue name and Redis key both sides use, in one place."""

from __future__ import annotations

QUEUE_NAME = "arq:queue"
JOB_FUNCTION = "generate"

KEY_PREFIX = "tl"
HEARTBEAT_PREFIX = f"{KEY_PREFIX}:worker:"
WORKERS_SET = f"{KEY_PREFIX}:workers"  # worker id -> last heartbeat time


def events_key(job_id: str) -> str:
    """The Redis Stream that carries a job's events, in order."""
    return f"{KEY_PREFIX}:job:{job_id}:events"


def result_key(job_id: str) -> str:
    """Set once (``SET NX``) with the final result, so a re-run job cannot answer twice."""
    return f"{KEY_PREFIX}:job:{job_id}:result"


def done_key(job_id: str) -> str:
    """A latch (a one-element list) pushed once the result exists: waiters BLPOP it.

    A waiter in ``wait`` mode wakes once per job instead of once per token.
    """
    return f"{KEY_PREFIX}:job:{job_id}:done"


def job_key(job_id: str) -> str:
    """A hash with the job's owner, status and timestamps."""
    return f"{KEY_PREFIX}:job:{job_id}"


def cancel_key(job_id: str) -> str:
    """Present while a cancel of this job has been asked for."""
    return f"{KEY_PREFIX}:job:{job_id}:cancel"


def heartbeat_key(worker_id: str) -> str:
    """A worker's latest heartbeat; it expires when the worker stops sending."""
    return f"{HEARTBEAT_PREFIX}{worker_id}"


FLEET_KEY = f"{KEY_PREFIX}:fleet"  # hash: state, changed_at, idle_until, wanted, reason
FLEET_LOCK = f"{KEY_PREFIX}:fleet:lock"  # the one controller across gateway replicas


def usage_key(*, scope: str, period: str) -> str:
    """Usage counters (jobs, tokens, GPU seconds) of a subject or ``env`` for a day or month."""
    return f"{KEY_PREFIX}:usage:{scope}:{period}"


def usage_subjects_key(period: str) -> str:
    """The subjects that used the service in a period (for operator totals)."""
    return f"{KEY_PREFIX}:usage-subjects:{period}"


def gpu_seconds_key(period: str) -> str:
    """GPU seconds metered from worker heartbeats in a period (a float counter)."""
    return f"{KEY_PREFIX}:gpu-seconds:{period}"
