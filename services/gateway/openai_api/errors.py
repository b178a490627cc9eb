"""OpenAI's error object for the ``/v1`` routes, made from the gateway's one ``Problem``;
and the Problem a failed or unfinished job is on ``/v1``.

OpenAI's clients read ``{"error": {"message", "type", "param", "code"}}``: ``message``
goes into the exception's text, ``param`` names the offending field, ``code`` is what
programs branch on (``context_length_exceeded``, ``model_not_found``, ...). Below the
renderer every failure is still a ``Problem`` (domain errors are mapped once, in
``problems.domain_problem``); only its rendering differs: a 422 (validation) is
OpenAI's 400, every other status and its headers (``WWW-Authenticate``,
``Retry-After``, ``Location``) are kept.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from services.gateway.http.openapi import JSON, ErrorShape
from services.gateway.http.problems import Problem, problem_headers

PREFIX = "/v1/"


class OpenAIError(msgspec.Struct, kw_only=True, frozen=True):
    """OpenAI's ``Error``: all four fields always present; ``param`` and ``code`` may be null."""

    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorResponse(msgspec.Struct, kw_only=True, frozen=True):
    """OpenAI's ``ErrorResponse``: every ``/v1`` error's body, and a failed stream's last chunk."""

    error: OpenAIError


# OpenAI's ``type`` by status (4xx: ``invalid_request_error`` unless listed; 5xx: ``server_error``).
_TYPES: dict[int, str] = {402: "insufficient_quota", 429: "rate_limit_error"}
# OpenAI's ``code`` by problem slug; any other slug is its own code in snake_case.
_CODES: dict[str, str | None] = {
    "unauthorized": "invalid_api_key",
    "forbidden": "insufficient_scope",
    "validation": None,  # ``param`` says which field
    "model-not-found": "model_not_found",
    "context-length-exceeded": "context_length_exceeded",
    "request-too-large": "context_length_exceeded",  # the worker's exact count said so
    "rate-limited": "rate_limit_exceeded",
    "budget-exhausted": "insufficient_quota",
}
# Retrying these would queue a second job (the first goes on, or was cancelled on purpose,
# or crashed its workers): OpenAI's clients honour ``x-should-retry: false``.
_NO_RETRY = frozenset({"wait-timeout", "job-cancelled", "worker-crashed"})


def openai_status(problem: Problem) -> int:
    """The status a ``/v1`` client gets: OpenAI answers bad parameters with 400, never 422."""
    return 400 if problem.status == 422 else problem.status


def _param(problem: Problem) -> str | None:
    path = problem.errors[0].get("path", "") if problem.errors else ""
    if path.startswith("$."):
        return path.removeprefix("$.")
    return path if path and not path.startswith("$") else None  # "$": the body as a whole


def openai_error(problem: Problem) -> OpenAIErrorResponse:
    """A Problem as OpenAI's error object."""
    status = openai_status(problem)
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    code = _CODES.get(problem.slug, problem.slug.replace("-", "_"))
    error = OpenAIError(
        message=problem.detail or problem.title, type=kind, param=_param(problem), code=code
    )
    return OpenAIErrorResponse(error=error)


def openai_error_response(
    problem: Problem, *, request_id: str = "", instance: str = ""
) -> web.Response:
    """Render a Problem as OpenAI does (``ERROR_RENDERERS`` of ``/v1/``); the request id
    travels in ``X-Request-Id``, which OpenAI's clients read as ``request_id``."""
    headers = problem_headers(problem)
    if problem.slug in _NO_RETRY:
        headers["x-should-retry"] = "false"
    return web.Response(
        body=msgspec.json.encode(openai_error(problem)),
        status=openai_status(problem),
        content_type=JSON,
        headers=headers,
    )


# How the /v1 operations document their errors (``@operation(errors=OPENAI_ERRORS)``).
OPENAI_ERRORS = ErrorShape(
    name="OpenAIError",
    media_type=JSON,
    body=OpenAIErrorResponse,
    validation_status=400,
    descriptions={
        400: (
            "Bad request (`invalid_request_error`): the body is not JSON, a parameter is invalid "
            "or unsupported (`error.param` names it), or prompt plus `max_tokens` cannot fit the "
            "model's context (`context_length_exceeded`)."
        ),
        404: "No such model (`model_not_found`), or no such route.",
    },
)


# A failed job's code -> (status, problem slug, title). The client's fault is a 4xx, a worker
# that cannot run it now a 503 (retry), one that broke a 502; anything unknown is ours too.
_FAILURES: dict[str, tuple[int, str, str]] = {
    "request_too_large": (400, "request-too-large", "Prompt plus max_tokens exceeds the model"),
    "cancelled": (409, "job-cancelled", "The job was cancelled"),
    "expired": (503, "overloaded", "No worker started the job before its deadline"),
    "shutdown": (503, "worker-unavailable", "The worker could not run the job"),
    "engine_restarted": (503, "worker-unavailable", "The worker could not run the job"),
    "engine_unavailable": (503, "worker-unavailable", "The worker could not run the job"),
    "fleet_stopped": (503, "fleet-stopped", "An operator stopped the GPU fleet"),
    "budget_exhausted": (402, "budget-exhausted", "The GPU budget for this month is spent"),
    "unavailable": (503, "unavailable", "Lost contact with the queue; the job may still finish"),
    "worker_crashed": (502, "worker-crashed", "The job crashed its worker twice"),
    "delivery_failed": (503, "unavailable", "The worker lost the queue while running the job"),
}


def job_failure(code: str, message: str) -> Problem:
    """A failed job as the client sees it."""
    status, slug, title = _FAILURES.get(code, (502, "worker-failed", "The worker failed the job"))
    retry_after = 5.0 if status == 503 else None
    return Problem(status, slug, title, detail=f"{code}: {message}", retry_after=retry_after)


def wait_timeout(job_id: str, headers: dict[str, str]) -> Problem:
    """A job not done within the wait: it goes on, and the client is told where to poll."""
    detail = f"job {job_id} is not done within the wait timeout; it goes on: GET /jobs/{job_id}"
    return Problem(504, "wait-timeout", "The job is still running", detail=detail, headers=headers)
