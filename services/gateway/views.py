"""Response bodies: what clients receive, as Structs (the OpenAPI document is built from these)."""

from __future__ import annotations

import msgspec

from services.protocol.messages import GenerateResult, JobStatus


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
