"""Every queue name, Redis key and hash field both sides use, in one place.

Like arq's ``constants.py``: a key's shape is written once, here, as a function;
store modules and Lua scripts build keys through these (``scripts.lua_key``), so a
renamed key cannot leave a stale copy behind.
"""

from __future__ import annotations

QUEUE_NAME = "arq:queue"
JOB_FUNCTION = "generate"

KEY_PREFIX = "tl"
HEARTBEAT_PREFIX = f"{KEY_PREFIX}:worker:"
WORKERS_SET = f"{KEY_PREFIX}:workers"  # worker id -> last heartbeat time


# ---------------------------------------------------------------- ARQ's keys (its format)
# arq.constants spells these; they are repeated here so that importing the contract costs
# no arq (the CDK app reads the queue name), and a test pins them to arq's.

ARQ_JOB_PREFIX = "arq:job:"
ARQ_RESULT_PREFIX = "arq:result:"
ARQ_IN_PROGRESS_PREFIX = "arq:in-progress:"
ARQ_ABORT_SET = "arq:abort"  # job id -> abort time: ARQ cancels the job's task


def arq_job_key(job_id: str) -> str:
    """ARQ's job record; it expires at the job's deadline (``_expires``)."""
    return f"{ARQ_JOB_PREFIX}{job_id}"


def arq_result_key(job_id: str) -> str:
    """ARQ's result record of a finished job."""
    return f"{ARQ_RESULT_PREFIX}{job_id}"


def arq_in_progress_key(job_id: str) -> str:
    """Present while a worker runs the job; a worker's lease keeps it short (``Leases``)."""
    return f"{ARQ_IN_PROGRESS_PREFIX}{job_id}"


# ---------------------------------------------------------------- one job's keys


def job_key(job_id: str) -> str:
    """A hash with the job's owner, status and timestamps (fields: ``JobField``)."""
    return f"{KEY_PREFIX}:job:{job_id}"


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


def cancel_key(job_id: str) -> str:
    """Present while a cancel of this job has been asked for."""
    return f"{KEY_PREFIX}:job:{job_id}:cancel"


EVENT_FIELD = "e"  # the one field of a stream entry: the msgpack-encoded event


def deadlines_key(queue_name: str) -> str:
    """A sorted set of a queue's unfinished jobs by deadline: what the reaper expires."""
    return f"{KEY_PREFIX}:deadlines:{queue_name}"


class JobField:
    """The fields of a job's hash (``job_key``)."""

    SUBJECT = "subject"
    STATUS = "status"
    CREATED_AT = "created_at"
    DEADLINE = "deadline"
    REQUEST_ID = "request_id"
    IDLE = "idle"


# ---------------------------------------------------------------- workers and the fleet


def heartbeat_key(worker_id: str) -> str:
    """A worker's latest heartbeat; it expires when the worker stops sending."""
    return f"{HEARTBEAT_PREFIX}{worker_id}"


FLEET_KEY = f"{KEY_PREFIX}:fleet"  # hash, fields: FleetField
# The model workers served last (msgpack ``ServedModel``): what a fleet scaled to zero serves.
SERVED_MODEL_KEY = f"{KEY_PREFIX}:served-model"
FLEET_LOCK = f"{KEY_PREFIX}:fleet:lock"  # the one controller across gateway replicas


# The fleet's states, in order (the state machine in services/gateway/fleet/rules.py;
# CloudWatch's FleetState metric publishes a state as its index here).
FLEET_STATES = ("stopped", "starting", "ready", "draining")


class FleetField:
    """The fields of the fleet's hash (``FLEET_KEY``)."""

    STATE = "state"  # stopped | starting | ready | draining
    VERSION = "version"  # +1 on every state change: transitions compare and set it
    CHANGED_AT = "changed_at"
    REASON = "reason"
    IDLE_UNTIL = "idle_until"  # stay warm until then, with nothing queued or running
    WANTS = "wants"  # +1 per request for a worker (a job, /gpu/start)
    SERVED = "served"  # the ``wants`` count a start or a ready worker has answered
    FAILURES = "failures"  # starts in a row that produced no ready worker
    RETRY_AT = "retry_at"  # no new start before then (backoff after a failed start)
    STOP_AT = "stop_at"  # the operator's stop: jobs queued before it fail, not restart


# ---------------------------------------------------------------- usage and cost


def usage_key(*, scope: str, period: str) -> str:
    """Usage counters (``UsageField``) of a subject or ``env`` for a day or month."""
    return f"{KEY_PREFIX}:usage:{scope}:{period}"


def usage_subjects_key(period: str) -> str:
    """The subjects that used the service in a period (for operator totals)."""
    return f"{KEY_PREFIX}:usage-subjects:{period}"


def gpu_seconds_key(period: str) -> str:
    """GPU seconds metered from worker heartbeats in a period (a float counter)."""
    return f"{KEY_PREFIX}:gpu-seconds:{period}"


class UsageField:
    """The fields of a usage hash (``usage_key``)."""

    JOBS = "jobs"
    PROMPT_TOKENS = "prompt_tokens"
    COMPLETION_TOKENS = "completion_tokens"
    GPU_SECONDS = "gpu_seconds"


def subject_scope(subject: str) -> str:
    """The usage scope of one subject (the environment's is ``ENV_SCOPE``)."""
    return f"subject:{subject}"


ENV_SCOPE = "env"
