"""Response bodies: what clients receive, as Structs (the OpenAPI document is built from these)."""

from __future__ import annotations

import msgspec

from services.gateway.billing.store import UsageTotals
from services.protocol.messages import GenerateResult, Heartbeat, JobStatus


class JobError(msgspec.Struct, kw_only=True, frozen=True):
    """Why a job did not succeed."""

    code: str
    message: str


class JobResponse(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """A job: its id and status, and its result or error once it has one."""

    id: str
    status: JobStatus
    created_at: float
    deadline: float
    result: GenerateResult | None = None
    error: JobError | None = None
    url: str = ""


class WorkerView(msgspec.Struct, kw_only=True, frozen=True):
    """One live worker, from its latest heartbeat."""

    id: str
    model: str
    device: str
    ready: bool
    active_jobs: int
    capacity: int
    age_s: float
    demo_model: bool


def worker_view(beat: Heartbeat, *, now: float) -> WorkerView:
    """How a worker's heartbeat is shown to clients."""
    return WorkerView(
        id=beat.worker_id,
        model=beat.model,
        device=beat.device,
        ready=beat.ready,
        active_jobs=beat.active_jobs,
        capacity=beat.capacity,
        age_s=round(max(0.0, now - beat.sent_at), 3),
        demo_model=beat.demo_model,
    )


class ReadyResponse(msgspec.Struct, kw_only=True, frozen=True):
    """Whether work can flow, and through which model."""

    ready: bool
    reason: str
    model: str | None
    queue_depth: int
    workers: list[WorkerView]


class HealthResponse(msgspec.Struct, kw_only=True, frozen=True):
    """Liveness: the process answers."""

    status: str
    env: str


class GpuResponse(msgspec.Struct, kw_only=True, frozen=True):
    """The GPU fleet as the operator sees it."""

    state: str
    backend: str
    instance_type: str
    hourly_price_usd: float
    workers_ready: int
    workers_live: int
    active_jobs: int
    queue_depth: int
    idle_until: float
    idle_left_s: float
    reason: str
    changed_at: float


class BudgetView(msgspec.Struct, kw_only=True, frozen=True):
    """Month-to-date GPU cost against the thresholds (0 = no threshold)."""

    month_to_date_usd: float
    warn_usd: float
    hard_stop_usd: float
    status: str


class UsageResponse(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """The caller's usage; operators also get every subject and the environment."""

    subject: str
    today: UsageTotals
    month: UsageTotals
    budget: BudgetView
    environment_today: UsageTotals | None = None
    environment_month: UsageTotals | None = None
    gpu_seconds_month: float | None = None
    gpu_cost_month_usd: float | None = None
    subjects: dict[str, UsageTotals] | None = None


# The SSE ``data:`` payloads of ``POST /infer?mode=stream`` (``done`` carries GenerateResult).
class StreamToken(msgspec.Struct, kw_only=True, frozen=True):
    """SSE ``event: token``: new text since the previous token event."""

    text: str


class StreamStatus(msgspec.Struct, kw_only=True, frozen=True):
    """SSE ``event: status``: the job changed state."""

    status: JobStatus


class StreamError(msgspec.Struct, kw_only=True, frozen=True):
    """SSE ``event: error``: the last event of a job that did not succeed."""

    code: str
    message: str
    status: JobStatus
