"""What the gateway answers, as Structs the SDK decodes into.

They mirror ``services/gateway/api/bodies.py`` (clients speak HTTP only and import no
service code); unknown fields are ignored, so a newer gateway never breaks an older SDK.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Usage(msgspec.Struct, kw_only=True, frozen=True):
    """Tokens a job consumed."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


class Result(msgspec.Struct, kw_only=True, frozen=True):
    """The final answer of a job."""

    text: str
    finish_reason: str
    model: str
    usage: Usage = Usage()
    timings: dict[str, Any] = {}


class JobError(msgspec.Struct, kw_only=True, frozen=True):
    """Why a job did not succeed."""

    code: str
    message: str


TERMINAL = frozenset({"succeeded", "failed", "cancelled", "expired"})


class Job(msgspec.Struct, kw_only=True, frozen=True):
    """A job: its id and status, and its result or error once it has one."""

    id: str
    status: str
    created_at: float = 0.0
    deadline: float = 0.0
    result: Result | None = None
    error: JobError | None = None
    url: str = ""

    @property
    def done(self) -> bool:
        """True once the job has ended (succeeded, failed, cancelled or expired)."""
        return self.status in TERMINAL


class Gpu(msgspec.Struct, kw_only=True, frozen=True):
    """The GPU fleet: ``stopped → starting → ready → draining``."""

    state: str
    backend: str = ""
    instance_type: str = ""
    hourly_price_usd: float = 0.0
    workers_ready: int = 0
    workers_live: int = 0
    active_jobs: int = 0
    queue_depth: int = 0
    idle_until: float = 0.0
    idle_left_s: float = 0.0
    reason: str = ""
    changed_at: float = 0.0


class Totals(msgspec.Struct, kw_only=True, frozen=True):
    """Usage counters over one period."""

    jobs: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    gpu_seconds: float = 0.0
    estimated_cost_usd: float = 0.0


class Budget(msgspec.Struct, kw_only=True, frozen=True):
    """Month-to-date GPU cost against the thresholds (0 = no threshold)."""

    month_to_date_usd: float = 0.0
    warn_usd: float = 0.0
    hard_stop_usd: float = 0.0
    status: str = ""


class UsageReport(msgspec.Struct, kw_only=True, frozen=True):
    """The caller's usage (operators also get the environment's)."""

    subject: str
    today: Totals
    month: Totals
    budget: Budget
    environment_month: Totals | None = None
    gpu_cost_month_usd: float | None = None


class Problem(msgspec.Struct, kw_only=True, frozen=True):
    """An ``application/problem+json`` body (RFC 9457)."""

    type: str = "about:blank"
    title: str = ""
    status: int = 0
    detail: str = ""
    request_id: str = ""
    errors: list[dict[str, str]] = []
    retry_after: float | None = None


class ApiError(Exception):
    """The gateway answered with an error; the problem's fields are attributes."""

    def __init__(self, status: int, problem: dict[str, Any], *, url: str = "") -> None:
        self.status = status
        self.problem = problem
        self.url = url
        known = msgspec.convert(
            {k: v for k, v in problem.items() if k in Problem.__struct_fields__}, Problem
        )
        self.type = known.type
        self.title = known.title
        self.detail = known.detail
        self.errors = known.errors
        self.retry_after = known.retry_after
        self.request_id = known.request_id
        message = known.detail or known.title or "request failed"
        where = f" from {url}" if url else ""
        super().__init__(f"HTTP {status}{where}: {message}")

    @property
    def slug(self) -> str:
        """The last part of ``type`` (``rate-limited``, ``already-finished``…)."""
        return self.type.rstrip("/").rsplit("/", 1)[-1]


def problem_of(raw: bytes) -> dict[str, Any]:
    """An error body as a problem dict, whatever the server sent.

    The native routes answer problem+json; ``/v1`` answers OpenAI's error object,
    whose message, code and param are carried over as detail, type and errors.
    """
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return {"detail": raw.decode(errors="replace")[:200]}
    if not isinstance(value, dict):
        return {"detail": str(value)[:200]}
    error = value.get("error")
    if isinstance(error, dict) and "message" in error:
        problem: dict[str, Any] = {"detail": error["message"], "type": error.get("code") or ""}
        if error.get("param"):
            problem["errors"] = [{"path": error["param"], "message": error["message"]}]
        return problem
    return value
