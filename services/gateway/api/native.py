"""The native API: ``POST /infer`` and ``/jobs/{id}``. Decode, call the job service, encode."""

from __future__ import annotations

import msgspec
from aiohttp import web
from aiohttp_sse import EventSourceResponse

from services.gateway.api.bodies import (
    JobError,
    JobResponse,
    StreamError,
    StreamStatus,
    StreamToken,
)
from services.gateway.http.openapi import Query, Reply, operation
from services.gateway.http.problems import REQUEST_ID, Problem, json_response, read_json
from services.gateway.http.state import STATE
from services.gateway.http.streams import relayed_events
from services.gateway.jobs.service import StatusChange, Submission, TextDelta
from services.gateway.jobs.store import JobView
from services.protocol.messages import DoneEvent, ErrorEvent, GenerateRequest, GenerateResult

routes = web.RouteTableDef()
STREAM_FAILED = ErrorEvent(
    code="internal",
    message="the gateway failed while streaming; the job may still finish: poll its URL",
    status="running",
)
MODES = ("wait", "async", "stream")
JOB_ID = {"job_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}
JOB_LINKS = ("GetJob", "CancelJob")
SSE_EVENTS: dict[str, type] = {
    "token": StreamToken,
    "status": StreamStatus,
    "done": GenerateResult,
    "error": StreamError,
}
_MODE = Query(
    name="mode",
    description=(
        "`wait` (default): answer 200 with the result, or 202 with the job if it is not done "
        "within the gateway's wait timeout. `async`: answer 202 at once with the job and its "
        "URL. `stream`: Server-Sent Events (`token`, `status`, then one `done` or `error`); "
        "also chosen when `mode` is absent and `Accept` includes `text/event-stream`."
    ),
    schema={"type": "string", "enum": list(MODES)},
)


def job_url(job_id: str) -> str:
    """Where a job is polled and cancelled."""
    return f"/jobs/{job_id}"


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


def job_response(view: JobView) -> JobResponse:
    """A job as the native API shows it."""
    error = JobError(code=view.error.code, message=view.error.message) if view.error else None
    return JobResponse(
        id=view.job_id,
        status=view.status,  # type: ignore[arg-type]
        created_at=view.created_at,
        deadline=view.deadline,
        result=view.result,
        error=error,
        url=job_url(view.job_id),
    )


def submission_headers(submission: Submission) -> dict[str, str]:
    """``Location`` of the job, and the budget warning when there is one."""
    headers = {"Location": job_url(submission.job_id)}
    if submission.budget_warning:
        headers["X-Budget-Warning"] = submission.budget_warning
    return headers


@routes.post("/infer")
@operation(
    operation_id="infer",
    summary="Generate text for one prompt: wait for it, get a job URL, or stream it",
    tag="inference",
    request=GenerateRequest,
    query=(_MODE,),
    headers=("IdempotencyKey",),
    replies={
        200: Reply(
            description=(
                "`mode=wait`: the finished job with its result. `mode=stream`: an SSE "
                "stream whose `data:` lines are JSON (see `x-sse-events`)."
            ),
            body=JobResponse,
            events=SSE_EVENTS,
            headers=("Location", "X-Job-Id", "X-Budget-Warning"),
            links=JOB_LINKS,
        ),
        202: Reply(
            description=(
                "Accepted: queued (`mode=async`), or not done within the wait timeout "
                "(`mode=wait`). Poll `Location`."
            ),
            body=JobResponse,
            headers=("Location!", "X-Budget-Warning"),
            links=JOB_LINKS,
        ),
    },
    problems=(400, 401, 402, 403, 413, 415, 422, 429),
)
async def infer(request: web.Request) -> web.StreamResponse:
    """Generate text for one prompt: wait for it, get a job URL, or stream it."""
    state = request.app[STATE]
    principal = await state.authenticator.authenticate(request.headers.get("Authorization"))
    mode = _mode(request)
    body: GenerateRequest = await read_json(request, GenerateRequest)
    state.jobs.check_prompt(len(body.prompt), path="$.prompt")
    await state.jobs.check_fits(
        body, texts=[body.prompt], prompt_path="$.prompt", limit_path="$.max_new_tokens"
    )
    submission = await state.jobs.submit(
        subject=principal.subject,
        request=body,
        request_id=request.get(REQUEST_ID, ""),
        idempotency_key=request.headers.get("Idempotency-Key"),
    )
    headers = submission_headers(submission)
    if mode == "stream":
        return await _stream(request, submission.job_id, subject=principal.subject, headers=headers)
    if mode == "wait" and await state.jobs.wait(submission.job_id) is not None:
        view = await state.jobs.read(submission.job_id, subject=principal.subject)
        if view is not None:
            return json_response(job_response(view), headers=headers)
    if mode == "async":
        view = await state.jobs.accepted(submission, subject=principal.subject)
    else:
        view = await state.jobs.read(submission.job_id, subject=principal.subject)
    if view is None:  # the job expired from Redis between two reads
        raise Problem(404, "not-found", "Job not found")
    return json_response(job_response(view), status=202, headers=headers)


def _encode(value: object) -> str:
    return msgspec.json.encode(value).decode()


async def _send_error(response: EventSourceResponse, error: ErrorEvent) -> None:
    body = StreamError(code=error.code, message=error.message, status=error.status)
    await response.send(_encode(body), event="error")


async def _failed(response: EventSourceResponse) -> None:
    await _send_error(response, STREAM_FAILED)


async def _stream(
    request: web.Request, job_id: str, *, subject: str, headers: dict[str, str]
) -> web.StreamResponse:
    """SSE: ``token`` deltas, ``status`` changes, then one ``done`` or ``error``."""
    async with relayed_events(
        request,
        job_id,
        subject=subject,
        headers={"X-Job-Id": job_id, **headers},
        failed=_failed,
    ) as (response, events):
        async for item in events:
            if isinstance(item, TextDelta):
                await response.send(_encode(StreamToken(text=item.text)), event="token")
            elif isinstance(item, StatusChange):
                status = StreamStatus(status=item.status)  # type: ignore[arg-type]
                await response.send(_encode(status), event="status")
            elif isinstance(item, DoneEvent):
                await response.send(_encode(item.result), event="done")
            elif isinstance(item, ErrorEvent):
                await _send_error(response, item)
    return response


@routes.get("/jobs/{job_id}")
@operation(
    operation_id="getJob",
    summary="A job's status and, once done, its result",
    tag="inference",
    path_params=JOB_ID,
    replies={200: Reply(description="The job, owned by the caller.", body=JobResponse)},
    problems=(401, 404),
)
async def get_job(request: web.Request) -> web.Response:
    """A job's status and, once done, its result; 404 unless the caller owns it."""
    state = request.app[STATE]
    principal = await state.authenticator.authenticate(request.headers.get("Authorization"))
    view = await state.jobs.read(request.match_info["job_id"], subject=principal.subject)
    if view is None:
        raise Problem(404, "not-found", "Job not found")
    return json_response(job_response(view))


@routes.delete("/jobs/{job_id}")
@operation(
    operation_id="cancelJob",
    summary="Cancel a job: a queued one never runs, a running one stops at its next token",
    tag="inference",
    path_params=JOB_ID,
    replies={
        200: Reply(
            description="The job has ended: cancelled now (409 if it had already ended).",
            body=JobResponse,
        ),
        202: Reply(
            description="Cancel requested; the running job has not stopped yet.",
            body=JobResponse,
        ),
    },
    problems=(401, 404, 409),
)
async def delete_job(request: web.Request) -> web.Response:
    """Cancel a job: a queued one never runs, a running one stops at its next token."""
    state = request.app[STATE]
    principal = await state.authenticator.authenticate(request.headers.get("Authorization"))
    outcome = await state.jobs.cancel(request.match_info["job_id"], subject=principal.subject)
    if outcome is None:
        raise Problem(404, "not-found", "Job not found")
    view, ended = outcome
    return json_response(job_response(view), status=200 if ended else 202)
