"""The one error shape: RFC 9457 ``application/problem+json``.

Handlers raise ``Problem``; domain code raises its own errors, which
``domain_problem`` maps to a status once. One middleware turns all of it,
aiohttp's own HTTP errors and anything unexpected into the same JSON body
(or, for a route family that registers its own renderer, such as the
OpenAI-compatible ``/v1/``, that family's error object made from the same Problem).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
from aiohttp import web
from redis.exceptions import RedisError

from services.gateway.billing.budget import BudgetExhausted
from services.gateway.jobs.fits import ContextTooLong
from services.gateway.jobs.hub import TooManyStreams
from services.gateway.jobs.service import AlreadyFinished, InvalidIdempotencyKey, PromptTooLong
from services.gateway.jobs.store import IdempotencyKeyReused, QueueFull, RateLimited

PROBLEM_CONTENT_TYPE = "application/problem+json"
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
BODY_TIMEOUT: web.AppKey[float] = web.AppKey("body_timeout_s", float)
log = logging.getLogger("tinyllama.gateway")


class ProblemBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The JSON body of every error response."""

    type: str
    title: str
    status: int
    detail: str = ""
    instance: str = ""
    request_id: str = ""
    errors: list[dict[str, str]] = []
    retry_after: float | None = None


class Problem(Exception):
    """A client-visible failure with an HTTP status and a stable ``type`` slug."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        *,
        detail: str = "",
        headers: Mapping[str, str] | None = None,
        errors: list[dict[str, str]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})
        self.errors = errors or []
        self.retry_after = retry_after


def problem_body(problem: Problem, *, request_id: str = "", instance: str = "") -> ProblemBody:
    """A Problem as the JSON body clients receive."""
    return ProblemBody(
        type=f"https://tinyllama.dev/problems/{problem.slug}",
        title=problem.title,
        status=problem.status,
        detail=problem.detail,
        instance=instance,
        request_id=request_id,
        errors=problem.errors,
        retry_after=problem.retry_after,
    )


def problem_headers(problem: Problem) -> dict[str, str]:
    """The headers every rendering of a Problem carries: its own, and ``Retry-After``."""
    headers = dict(problem.headers)
    if problem.retry_after is not None:
        headers.setdefault("Retry-After", str(max(1, round(problem.retry_after + 0.499))))
    return headers


def problem_response(problem: Problem, *, request_id: str = "", instance: str = "") -> web.Response:
    """Render a Problem as a problem+json response."""
    body = problem_body(problem, request_id=request_id, instance=instance)
    headers = problem_headers(problem)
    return web.Response(
        body=msgspec.json.encode(body),
        status=problem.status,
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


_HTTP_SLUGS: dict[int, tuple[str, str]] = {
    400: ("bad-request", "Bad request"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


def _from_http_exception(exc: web.HTTPException) -> Problem:
    slug, title = _HTTP_SLUGS.get(exc.status, ("http-error", exc.reason or "HTTP error"))
    headers = {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "www-authenticate"}}
    detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else ""
    return Problem(exc.status, slug, title, detail=detail, headers=headers)


def domain_problem(exc: Exception) -> Problem | None:
    """The client-facing form of a domain error, or ``None`` if it is not one."""
    if isinstance(exc, RateLimited):
        return Problem(
            429, "rate-limited", "Too many requests", detail=str(exc), retry_after=exc.wait_s
        )
    if isinstance(exc, QueueFull):
        return Problem(429, "queue-full", "The queue is full", detail=str(exc), retry_after=5.0)
    if isinstance(exc, BudgetExhausted):
        return Problem(
            402, "budget-exhausted", "The GPU budget for this month is spent", detail=str(exc)
        )
    if isinstance(exc, InvalidIdempotencyKey):
        return Problem(
            400, "invalid-idempotency-key", "Idempotency-Key is invalid", detail=str(exc)
        )
    if isinstance(exc, AlreadyFinished):
        return Problem(409, "already-finished", "The job had already ended", detail=str(exc))
    if isinstance(exc, IdempotencyKeyReused):
        return _unprocessable(
            "idempotency-key-reused",
            "Idempotency-Key was used with another request",
            exc,
            path="Idempotency-Key",
            message="reused with a different body",
        )
    if isinstance(exc, TooManyStreams):
        return Problem(
            429, "too-many-streams", "Too many open streams", detail=str(exc), retry_after=5.0
        )
    if isinstance(exc, ContextTooLong):
        return _unprocessable(
            "context-length-exceeded",
            "Prompt plus max_new_tokens exceeds the model's context",
            exc,
            path=exc.path,
            message=str(exc),
        )
    if isinstance(exc, PromptTooLong):
        return _unprocessable(
            "validation", "Request body failed validation", exc, path=exc.path, message="too long"
        )
    return None


def _unprocessable(slug: str, title: str, exc: Exception, *, path: str, message: str) -> Problem:
    """A 422 naming the one field (or header) that is wrong."""
    return Problem(422, slug, title, detail=str(exc), errors=[{"path": path, "message": message}])


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Renderer = Callable[..., web.Response]  # (problem, *, request_id, instance) -> the response
# Path prefix -> how that route family renders a Problem (``/v1/``: OpenAI's error object).
ERROR_RENDERERS: web.AppKey[Mapping[str, Renderer]] = web.AppKey("error_renderers", dict)


def renderer_for(request: web.Request) -> Renderer:
    """How this request's errors look: its route family's renderer, else problem+json."""
    for prefix, render in request.app.get(ERROR_RENDERERS, {}).items():
        if request.path.startswith(prefix):
            return render
    return problem_response


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map every failure below the handler to a Problem, rendered in its route family's shape.

    problem+json unless ``ERROR_RENDERERS`` names another renderer for the path's prefix
    (OpenAI's error object on ``/v1/``); anything unexpected is a bare 500.
    """
    request_id = request.get(REQUEST_ID, "")
    render = renderer_for(request)
    try:
        return await handler(request)
    except Problem as problem:
        return render(problem, request_id=request_id, instance=request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return render(_from_http_exception(exc), request_id=request_id, instance=request.path)
    except RedisError as exc:
        # The queue is unreachable: the client did nothing wrong and may retry shortly.
        log.warning("redis unavailable: %s", type(exc).__name__, extra={"request_id": request_id})
        problem = Problem(
            503,
            "unavailable",
            "The queue is unavailable",
            detail="try again shortly",
            retry_after=2.0,
        )
        return render(problem, request_id=request_id, instance=request.path)
    except Exception as exc:
        mapped = domain_problem(exc)
        if mapped is not None:
            return render(mapped, request_id=request_id, instance=request.path)
        log.exception("unhandled error", extra={"request_id": request_id})
        problem = Problem(500, "internal", "Internal server error", detail="see server logs")
        return render(problem, request_id=request_id, instance=request.path)


JSON = "application/json"


async def read_json(request: web.Request, kind: type[Any]) -> Any:
    """The body as a ``kind`` Struct: 415 unless it is sent as JSON, 400/422 if it is bad."""
    if request.content_type != JSON:
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            detail="send the body as application/json",
        )
    try:
        async with asyncio.timeout(request.app.get(BODY_TIMEOUT, 30.0)):
            raw = await request.read()
    except TimeoutError:
        raise Problem(
            408,
            "request-timeout",
            "The request body arrived too slowly",
            detail="send the whole body promptly",
            headers={"Connection": "close"},
        ) from None
    return decode_body(raw, kind)


def json_response(
    value: object, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """``value`` (Structs included) as a JSON response."""
    return web.Response(
        body=msgspec.json.encode(value), status=status, content_type=JSON, headers=headers
    )


def decode_body(raw: bytes, kind: type[Any]) -> Any:
    """Decode JSON straight into a Struct; a bad body becomes a 400/422 naming the field path."""
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        message = str(exc)
        path = message.rsplit(" - at `", 1)[1].rstrip("`") if " - at `" in message else "$"
        raise Problem(
            422,
            "validation",
            "Request body failed validation",
            detail=message,
            errors=[{"path": path, "message": message.split(" - at `")[0]}],
        ) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise Problem(
            400, "invalid-json", "Request body is not valid JSON", detail=str(exc)
        ) from None
