"""HTTP handlers: decode, call the domain, encode. Nothing else lives here."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid

import msgspec
from aiohttp import web
from aiohttp_sse import sse_response
from redis.exceptions import RedisError

from services.gateway import fleet, jobs
from services.gateway.budget import check_budget
from services.gateway.problems import REQUEST_ID, Problem, decode_body
from services.gateway.readiness import live_workers
from services.gateway.state import STATE, GatewayState
from services.gateway.views import HealthResponse, JobError, JobResponse, ReadyResponse
from services.protocol.messages import (
    ChatMessage,
    DoneEvent,
    ErrorEvent,
    GenerateRequest,
    GenerateResult,
    JobPayload,
    StatusEvent,
    TokenEvent,
)

routes = web.RouteTableDef()
MODES = ("wait", "async", "stream")


def json_response(
    value: object, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(value),
        status=status,
        content_type="application/json",
        headers=headers,
    )


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """Liveness: answers while the process runs, touching nothing else."""
    return json_response(HealthResponse(status="ok", env=request.app[STATE].settings.env))


@routes.get("/ready")
async def ready(request: web.Request) -> web.Response:
    """Readiness: Redis answers and a worker with a loaded model sent a heartbeat recently."""
    state = request.app[STATE]
    try:
        await state.redis.ping()
        workers = await live_workers(state.redis, max_age_s=state.settings.heartbeat_max_age_s)
        depth = await jobs.queue_depth(state.redis, queue_name=state.settings.queue_name)
    except (RedisError, OSError) as exc:
        body = ReadyResponse(
            ready=False,
            reason=f"redis unreachable: {type(exc).__name__}",
            model=None,
            queue_depth=0,
            workers=[],
        )
        return json_response(body, status=503)
    loaded = [w for w in workers if w.ready]
    if loaded:
        body = ReadyResponse(
            ready=True, reason="ok", model=loaded[0].model, queue_depth=depth, workers=workers
        )
        return json_response(body)
    if state.settings.fleet != "none":
        # No warm worker, but the gateway can start one: work can flow (it waits `starting`).
        fleet_state = (await fleet.read_fleet(state.redis)).state
        body = ReadyResponse(
            ready=True,
            reason=f"fleet {fleet_state}: GPU workers start on demand",
            model=None,
            queue_depth=depth,
            workers=workers,
        )
        return json_response(body)
    reason = "worker is loading its model" if workers else "no worker heartbeat seen recently"
    body = ReadyResponse(ready=False, reason=reason, model=None, queue_depth=depth, workers=workers)
    return json_response(body, status=503)


def _mode(request: web.Request) -> str:
    mode = request.query.get("mode")
    if mode is None:
        return "stream" if "text/event-stream" in request.headers.get("Accept", "") else "wait"
    if mode not in MODES:
        raise Problem(
            400,
            "invalid-mode",
            "Unknown mode",
            detail=f"mode must be one of {MODES}",
            errors=[{"path": "mode", "message": f"expected one of {MODES}"}],
        )
    return mode


def _job_url(job_id: str) -> str:
    return f"/jobs/{job_id}"


def _view_response(view: jobs.JobView) -> JobResponse:
    error = JobError(code=view.error.code, message=view.error.message) if view.error else None
    return JobResponse(
        id=view.job_id,
        status=view.status,
        created_at=view.created_at,
        deadline=view.deadline,
        result=view.result,
        error=error,
        url=_job_url(view.job_id),
    )


async def _read_body(request: web.Request, state: GatewayState) -> GenerateRequest:
    content_type = request.headers.get("Content-Type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            detail="send the body as application/json",
        )
    raw = await request.read()
    body: GenerateRequest = decode_body(raw, GenerateRequest)
    if len(body.prompt) > state.settings.max_prompt_chars:
        raise Problem(
            422,
            "validation",
            "Request body failed validation",
            detail=f"prompt is longer than {state.settings.max_prompt_chars} characters",
            errors=[{"path": "$.prompt", "message": "too long"}],
        )
    return body


async def submit_generation(
    request: web.Request,
    state: GatewayState,
    subject: str,
    body: GenerateRequest,
    *,
    messages: list[ChatMessage] | None = None,
) -> tuple[JobPayload, jobs.Submitted, str | None]:
    """Budget gate, then one admitted job: what /infer and the OpenAI routes share.

    Returns the payload, the submission and a budget warning (or ``None``).
    """
    warning = await check_budget(state)
    now = time.time()
    payload = JobPayload(
        job_id=uuid.uuid4().hex,
        subject=subject,
        request=body,
        enqueued_at=now,
        deadline=now + state.settings.job_deadline_s,
        request_id=request.get(REQUEST_ID, ""),
        messages=messages or [],
    )
    submitted = await state.admission.submit(
        payload, idempotency_key=request.headers.get("Idempotency-Key")
    )
    return payload, submitted, warning


@routes.post("/infer")
async def infer(request: web.Request) -> web.StreamResponse:
    """Generate text for one prompt: wait for it, get a job URL, or stream it."""
    state = request.app[STATE]
    principal = await state.authenticator.authenticate(request.headers.get("Authorization"))
    mode = _mode(request)
    body = await _read_body(request, state)
    payload, submitted, warning = await submit_generation(request, state, principal.subject, body)
    job_id = submitted.job_id
    headers = {"Location": _job_url(job_id)}
    if warning:
        headers["X-Budget-Warning"] = warning
    if mode == "stream":
        return await _stream(request, state, job_id=job_id, headers=headers)
    if mode == "wait":
        final = await jobs.wait_for_end(
            state.redis, job_id, timeout_s=state.settings.wait_timeout_s
        )
        if final is not None:
            view = await _read(state, job_id, subject=principal.subject)
            if view is not None:
                if view.result is not None:
                    _observe_result(state, view.result)
                return json_response(_view_response(view), headers=headers)
    if submitted.created and mode == "async":
        # Nothing can have happened to a job created a moment ago: skip the read-back.
        status = "queued" if state.settings.fleet == "none" else await _queued_status(state)
        view = jobs.JobView(
            job_id=job_id, status=status, created_at=payload.enqueued_at, deadline=payload.deadline
        )
    else:
        view = await _read(state, job_id, subject=principal.subject)
    if view is None:  # an idempotency key that another subject's job... cannot happen; be safe
        raise Problem(404, "not-found", "Job not found")
    return json_response(_view_response(view), status=202, headers=headers)


async def _queued_status(state: GatewayState) -> str:
    fleet_state = (await fleet.read_fleet(state.redis)).state
    return "starting" if fleet_state in ("stopped", "starting") else "queued"


async def _read(state: GatewayState, job_id: str, *, subject: str) -> jobs.JobView | None:
    """A job as its owner sees it; queued behind a stopped fleet reads ``starting``."""
    view = await jobs.read_job(state.redis, job_id, subject=subject)
    if view is not None and view.status == "queued" and state.settings.fleet != "none":
        if (await fleet.read_fleet(state.redis)).state in ("stopped", "starting"):
            return dataclasses.replace(view, status="starting")
    return view


def _observe_result(state: GatewayState, result: GenerateResult) -> None:
    m = state.metrics
    m.e2e.observe(result.timings.total_s)
    m.queue_time.observe(result.timings.queued_s)
    if result.timings.first_token_s is not None:
        m.ttft.observe(result.timings.first_token_s)


async def _stream(
    request: web.Request, state: GatewayState, *, job_id: str, headers: dict[str, str]
) -> web.StreamResponse:
    """SSE: ``token`` deltas, then one ``done`` or ``error``; pings keep ALBs from cutting it."""
    deadline = time.monotonic() + state.settings.job_deadline_s + 5
    shown = 0
    finished = False
    async with sse_response(
        request,
        allow_all_methods=True,
        ping_interval=state.settings.sse_ping_s,
        headers={"X-Job-Id": job_id, **headers},
    ) as response:
        try:
            async for _, event in jobs.stream_events(state.redis, job_id, deadline=deadline):
                if event is None:
                    continue
                if isinstance(event, TokenEvent):
                    # A re-run job repeats offsets we already sent: send only what is new.
                    end = event.offset + len(event.text)
                    if end <= shown:
                        continue
                    delta = event.text[max(0, shown - event.offset) :]
                    shown = end
                    await response.send(
                        msgspec.json.encode({"text": delta}).decode(), event="token"
                    )
                elif isinstance(event, StatusEvent):
                    await response.send(
                        msgspec.json.encode({"status": event.status}).decode(), event="status"
                    )
                elif isinstance(event, DoneEvent):
                    finished = True
                    _observe_result(state, event.result)
                    await response.send(msgspec.json.encode(event.result).decode(), event="done")
                elif isinstance(event, ErrorEvent):
                    finished = True
                    data = {"code": event.code, "message": event.message, "status": event.status}
                    await response.send(msgspec.json.encode(data).decode(), event="error")
            if not finished:
                data = {
                    "code": "timeout",
                    "message": "the job did not finish in time",
                    "status": "failed",
                }
                await response.send(msgspec.json.encode(data).decode(), event="error")
                finished = True
        finally:
            if not finished:
                # The client left mid-stream: nobody wants the rest, stop paying for it.
                with contextlib.suppress(Exception):
                    await asyncio.shield(
                        jobs.cancel_job(
                            state.redis,
                            job_id,
                            queue_name=state.settings.queue_name,
                            ttl_s=state.settings.result_ttl_s,
                        )
                    )
    return response


@routes.get("/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    """A job's status and, once done, its result; 404 unless the caller owns it."""
    state = request.app[STATE]
    principal = await state.authenticator.authenticate(request.headers.get("Authorization"))
    view = await _read(state, request.match_info["job_id"], subject=principal.subject)
    if view is None:
        raise Problem(404, "not-found", "Job not found")
    return json_response(_view_response(view))


@routes.delete("/jobs/{job_id}")
async def delete_job(request: web.Request) -> web.Response:
    """Cancel a job: a queued one never runs, a running one stops at its next token."""
    state = request.app[STATE]
    principal = await state.authenticator.authenticate(request.headers.get("Authorization"))
    job_id = request.match_info["job_id"]
    view = await jobs.read_job(state.redis, job_id, subject=principal.subject)
    if view is None:
        raise Problem(404, "not-found", "Job not found")
    if not jobs.is_terminal(view.status):
        await jobs.cancel_job(
            state.redis,
            job_id,
            queue_name=state.settings.queue_name,
            ttl_s=state.settings.result_ttl_s,
        )
        final = await jobs.wait_for_end(state.redis, job_id, timeout_s=5.0)
        view = await jobs.read_job(state.redis, job_id, subject=principal.subject) or view
        if final is None and not jobs.is_terminal(view.status):
            return json_response(_view_response(view), status=202)
    return json_response(_view_response(view))
