"""The gateway's OpenAPI 3.1 document, generated from the wire Structs.

Every operation is one ``Operation`` entry in ``OPERATIONS``: its path,
method, request Struct, parameters and responses by status. Schemas come
from ``msgspec.json.schema_components``, so the document cannot drift from
what the handlers decode and encode. Every error is RFC 9457
``application/problem+json`` with ``ProblemBody``.

Adding a route: append one ``Operation`` to ``OPERATIONS`` (the test suite
fails while a route registered in the app has no entry here).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
from collections.abc import Mapping
from typing import Any

import msgspec
from aiohttp import web

from services.gateway.openai_views import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    CompletionRequest,
    ModelList,
    TextCompletion,
)
from services.gateway.problems import PROBLEM_CONTENT_TYPE, ProblemBody
from services.gateway.views import (
    GpuResponse,
    HealthResponse,
    JobResponse,
    ReadyResponse,
    UsageResponse,
)
from services.protocol.messages import GenerateRequest, GenerateResult, JobStatus

OPENAPI_VERSION = "3.1.0"
REF_TEMPLATE = "#/components/schemas/{name}"
JSON = "application/json"
EVENT_STREAM = "text/event-stream"
JOB_ID_PATTERN = "^[0-9a-f]{32}$"


# Shapes of the SSE ``data:`` payloads of ``POST /infer?mode=stream``; the handler writes
# these as plain JSON objects, so they are documented here (``done`` carries GenerateResult).
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


# ---------------------------------------------------------------- the declarative table


@dataclasses.dataclass(frozen=True, kw_only=True)
class Query:
    """One query parameter."""

    name: str
    description: str
    schema: Mapping[str, Any]
    required: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class Reply:
    """One response status: a JSON Struct body, SSE events, or other media types' schemas."""

    description: str
    body: type | None = None
    events: Mapping[str, type] = dataclasses.field(default_factory=dict)  # SSE name -> data
    media: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    headers: tuple[str, ...] = ()  # names under components.headers; "Name!" = required
    links: tuple[str, ...] = ()  # names under components.links


@dataclasses.dataclass(frozen=True, kw_only=True)
class Operation:
    """One route: what it takes and every status it answers with."""

    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    description: str = ""
    auth: bool = True
    request: type | None = None
    query: tuple[Query, ...] = ()
    headers: tuple[str, ...] = ()  # names under components.parameters
    path_params: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    replies: Mapping[int, Reply] = dataclasses.field(default_factory=dict)
    problems: tuple[int, ...] = ()  # statuses answered with problem+json (see PROBLEMS)


# The problem+json responses every operation can point at, by status.
PROBLEMS: dict[int, tuple[str, tuple[str, ...]]] = {
    400: ("Bad request: the body is not JSON, or a parameter or header is invalid.", ()),
    401: ("Missing, malformed, expired or otherwise invalid bearer token.", ("WWW-Authenticate!",)),
    402: ("The environment's monthly GPU budget is spent: no new work until it is raised.", ()),
    403: ("The token is valid but lacks the scope this route needs.", ("WWW-Authenticate!",)),
    404: ("No such resource, or it belongs to someone else.", ()),
    409: ("Conflict: this deployment does not control its GPUs (TINYLLAMA_FLEET=none).", ()),
    413: ("The request body is larger than the gateway accepts.", ()),
    415: ("The body must be sent as application/json.", ()),
    422: ("The body is JSON but fails validation; `errors` names each field path.", ()),
    429: (
        "Rate limit reached, or the queue is full: retry after `Retry-After` s.",
        ("Retry-After!",),
    ),
    500: ("Unexpected failure (a bug): the body says to see the server logs.", ()),
    503: ("The gateway cannot serve this right now.", ()),
}

SSE_EVENTS: dict[str, type] = {
    "token": StreamToken,
    "status": StreamStatus,
    "done": GenerateResult,
    "error": StreamError,
}
_JOB_LINKS = ("GetJob", "CancelJob")
_JOB_ID = {"job_id": {"type": "string", "pattern": JOB_ID_PATTERN}}
_MODE = Query(
    name="mode",
    description=(
        "`wait` (default): answer 200 with the result, or 202 with the job if it is not done "
        "within the gateway's wait timeout. `async`: answer 202 at once with the job and its "
        "URL. `stream`: Server-Sent Events (`token`, `status`, then one `done` or `error`); "
        "also chosen when `mode` is absent and `Accept` includes `text/event-stream`."
    ),
    schema={"type": "string", "enum": ["wait", "async", "stream"]},
)

# How a job that failed answers on the OpenAI-compatible routes (problem+json, like all errors).
_PROBLEM_MEDIA = {
    PROBLEM_CONTENT_TYPE: {"schema": {"$ref": REF_TEMPLATE.format(name="ProblemBody")}}
}
_OPENAI_FAILURES: dict[int, Reply] = {
    409: Reply(description="The job was cancelled (`DELETE /jobs/{id}`).", media=_PROBLEM_MEDIA),
    502: Reply(description="The worker failed the job.", media=_PROBLEM_MEDIA),
    504: Reply(
        description=(
            "Not done within the gateway's wait timeout (the job goes on: poll `Location`), "
            "or the job waited past its deadline before a worker took it."
        ),
        media=_PROBLEM_MEDIA,
        headers=("Location",),
    ),
}
_OPENAI_NOTE = (
    "OpenAI-compatible: one job like `POST /infer` (same queue, limits and `Idempotency-Key`). "
    "`model` is informational (one model is served; responses name it). Unsupported options "
    "(`n` > 1, `logprobs`, penalties, `logit_bias`, `tools`, non-text `response_format`) are "
    "a 422 naming their path. A prompt plus `max_tokens` past the model's context is a 400. "
    "With `stream: true` the answer is SSE with bare `data:` lines (no `event:`), each a "
    'chunk, then `data: [DONE]`; a failure mid-stream is `data: {"error": {...}}`.'
)


def _openai_completion(
    *, path: str, operation_id: str, request: type, body: type, chunk: type
) -> Operation:
    """The table entry of one OpenAI-compatible completion route (chat or text)."""
    return Operation(
        method="post",
        path=path,
        operation_id=operation_id,
        summary=f"OpenAI-compatible {body.__name__}: wait for it, or stream it",
        tag="inference",
        description=_OPENAI_NOTE,
        request=request,
        headers=("IdempotencyKey",),
        replies={
            200: Reply(
                description="The finished completion; with `stream: true`, SSE chunks.",
                body=body,
                events={"message": chunk},
                headers=("Location", "X-Job-Id", "X-Budget-Warning"),
            ),
            **_OPENAI_FAILURES,
        },
        problems=(400, 401, 402, 413, 415, 422, 429, 503),
    )


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="get",
        path="/health",
        operation_id="getHealth",
        summary="Liveness: the process answers",
        tag="operations",
        auth=False,
        replies={200: Reply(description="The process is alive.", body=HealthResponse)},
    ),
    Operation(
        method="get",
        path="/ready",
        operation_id="getReady",
        summary="Readiness: Redis answers and a worker with a loaded model is alive",
        tag="operations",
        auth=False,
        replies={
            200: Reply(description="Ready: work can flow.", body=ReadyResponse),
            503: Reply(description="Not ready; `reason` says why.", body=ReadyResponse),
        },
    ),
    Operation(
        method="post",
        path="/infer",
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
                links=_JOB_LINKS,
            ),
            202: Reply(
                description=(
                    "Accepted: queued (`mode=async`), or not done within the wait timeout "
                    "(`mode=wait`). Poll `Location`."
                ),
                body=JobResponse,
                headers=("Location!", "X-Budget-Warning"),
                links=_JOB_LINKS,
            ),
        },
        problems=(400, 401, 402, 403, 413, 415, 422, 429),
    ),
    Operation(
        method="get",
        path="/jobs/{job_id}",
        operation_id="getJob",
        summary="A job's status and, once done, its result",
        tag="inference",
        path_params=_JOB_ID,
        replies={200: Reply(description="The job, owned by the caller.", body=JobResponse)},
        problems=(401, 404),
    ),
    Operation(
        method="delete",
        path="/jobs/{job_id}",
        operation_id="cancelJob",
        summary="Cancel a job: a queued one never runs, a running one stops at its next token",
        tag="inference",
        path_params=_JOB_ID,
        replies={
            200: Reply(
                description="The job has ended (cancelled, or it had already ended).",
                body=JobResponse,
            ),
            202: Reply(
                description="Cancel requested; the running job has not stopped yet.",
                body=JobResponse,
            ),
        },
        problems=(401, 404),
    ),
    Operation(
        method="get",
        path="/gpu",
        operation_id="getGpu",
        summary="GPU fleet: state, instance type, hourly price, workers, idle time left",
        tag="operations",
        replies={200: Reply(description="The fleet now.", body=GpuResponse)},
        problems=(401,),
    ),
    Operation(
        method="post",
        path="/gpu/start",
        operation_id="startGpu",
        summary="Operator: start the fleet now (admin scope)",
        tag="operations",
        replies={
            202: Reply(description="Start requested; the fleet as it is now.", body=GpuResponse)
        },
        problems=(401, 402, 403, 409),
    ),
    Operation(
        method="post",
        path="/gpu/stop",
        operation_id="stopGpu",
        summary="Operator: drain running jobs and stop the fleet (admin scope)",
        tag="operations",
        replies={
            202: Reply(description="Stop requested; the fleet as it is now.", body=GpuResponse)
        },
        problems=(401, 403, 409),
    ),
    Operation(
        method="get",
        path="/usage",
        operation_id="getUsage",
        summary="The caller's jobs, tokens and cost today and this month (operators: everyone)",
        tag="operations",
        replies={
            200: Reply(
                description="Usage and budget; the environment-wide fields for operators only.",
                body=UsageResponse,
                headers=("X-Budget-Warning",),
            )
        },
        problems=(401,),
    ),
    Operation(
        method="get",
        path="/metrics",
        operation_id="getMetrics",
        summary="Prometheus metrics (text exposition format 0.0.4; scrape from inside the network)",
        tag="operations",
        auth=False,
        replies={
            200: Reply(
                description="Prometheus text format.",
                media={"text/plain": {"schema": {"type": "string"}}},
            )
        },
    ),
    Operation(
        method="get",
        path="/v1/models",
        operation_id="listModels",
        summary="OpenAI-compatible: the model live workers serve (empty while none is ready)",
        tag="inference",
        replies={200: Reply(description="The served models.", body=ModelList)},
        problems=(401,),
    ),
    _openai_completion(
        path="/v1/chat/completions",
        operation_id="createChatCompletion",
        request=ChatCompletionRequest,
        body=ChatCompletion,
        chunk=ChatCompletionChunk,
    ),
    _openai_completion(
        path="/v1/completions",
        operation_id="createCompletion",
        request=CompletionRequest,
        body=TextCompletion,
        chunk=TextCompletion,
    ),
    Operation(
        method="get",
        path="/openapi.json",
        operation_id="getOpenapi",
        summary="This document",
        tag="operations",
        auth=False,
        replies={
            200: Reply(
                description="The OpenAPI 3.1 document.",
                media={JSON: {"schema": {"type": "object", "required": ["openapi", "paths"]}}},
            )
        },
    ),
)


# ------------------------------------------------------------------- shared components

_HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-Id": {
        "description": "The request's id (the caller's `X-Request-Id` if valid, else a new one).",
        "schema": {"type": "string"},
    },
    "Location": {
        "description": "The job's URL (`/jobs/{job_id}`).",
        "schema": {"type": "string"},
    },
    "X-Job-Id": {
        "description": "The job's id (`mode=stream` only).",
        "schema": {"type": "string"},
    },
    "X-Budget-Warning": {
        "description": "Present once the month's GPU cost passed the warning threshold.",
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 1},
    },
    "WWW-Authenticate": {
        "description": 'RFC 6750 challenge: `Bearer realm="tinyllama", error="invalid_token"`.',
        "schema": {"type": "string"},
    },
}

_PARAMETERS: dict[str, dict[str, Any]] = {
    "IdempotencyKey": {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": (
            "Retrying with the same key (per caller) returns the job the first request "
            "created instead of queueing another. At most 255 characters."
        ),
        "schema": {"type": "string", "maxLength": 255},
    },
    "XRequestId": {
        "name": "X-Request-Id",
        "in": "header",
        "required": False,
        "description": (
            "Correlation id, echoed in the response and logs. A value outside the pattern "
            "is replaced by a new id rather than refused."
        ),
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
    },
}

_LINKS: dict[str, dict[str, Any]] = {
    "GetJob": {
        "operationId": "getJob",
        "parameters": {"job_id": "$response.body#/id"},
        "description": "Poll the job this response names.",
    },
    "CancelJob": {
        "operationId": "cancelJob",
        "parameters": {"job_id": "$response.body#/id"},
        "description": "Cancel the job this response names.",
    },
}


def _header_refs(names: tuple[str, ...]) -> dict[str, Any]:
    headers: dict[str, Any] = {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}}
    for name in names:
        required = name.endswith("!")
        name = name.rstrip("!")
        ref = {"$ref": f"#/components/headers/{name}"}
        # A $ref sibling cannot add `required` in a Header Object: inline it instead.
        headers[name] = {**_HEADERS[name], "required": True} if required else ref
    return headers


def _schema_ref(kind: type) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(name=kind.__name__)}


def _problem_name(status: int) -> str:
    return f"Problem{status}"


def _problem_response(status: int) -> dict[str, Any]:
    description, headers = PROBLEMS[status]
    return {
        "description": description,
        "headers": _header_refs(headers),
        "content": {PROBLEM_CONTENT_TYPE: {"schema": _schema_ref(ProblemBody)}},
    }


def _reply(reply: Reply) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if reply.body is not None:
        content[JSON] = {"schema": _schema_ref(reply.body)}
    if reply.events:
        names = ", ".join(f"`{name}`" for name in reply.events)
        content[EVENT_STREAM] = {
            "schema": {
                "type": "string",
                "description": f"SSE events {names}; each `data:` is JSON (`x-sse-events`).",
            },
            "x-sse-events": {name: _schema_ref(kind) for name, kind in reply.events.items()},
        }
    for media_type, spec in reply.media.items():
        content[media_type] = dict(spec)
    out: dict[str, Any] = {"description": reply.description, "headers": _header_refs(reply.headers)}
    if content:
        out["content"] = content
    if reply.links:
        out["links"] = {name: {"$ref": f"#/components/links/{name}"} for name in reply.links}
    return out


def _operation(op: Operation) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": dict(schema)}
        for name, schema in op.path_params.items()
    ]
    parameters += [
        {
            "name": q.name,
            "in": "query",
            "required": q.required,
            "description": q.description,
            "schema": dict(q.schema),
        }
        for q in op.query
    ]
    parameters += [{"$ref": f"#/components/parameters/{name}"} for name in op.headers]
    parameters.append({"$ref": "#/components/parameters/XRequestId"})
    responses: dict[str, Any] = {str(s): _reply(r) for s, r in sorted(op.replies.items())}
    for status in sorted({*op.problems, 500}):
        responses[str(status)] = {"$ref": f"#/components/responses/{_problem_name(status)}"}
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": parameters,
        "security": [{"bearerAuth": []}] if op.auth else [],
        "responses": dict(sorted(responses.items())),
    }
    if op.description:
        out["description"] = op.description
    if op.request is not None:
        body = {JSON: {"schema": _schema_ref(op.request)}}
        out["requestBody"] = {"required": True, "content": body}
    return out


def _struct_types(operations: tuple[Operation, ...]) -> list[type]:
    kinds: list[type] = [ProblemBody]
    for op in operations:
        if op.request is not None:
            kinds.append(op.request)
        for reply in op.replies.values():
            kinds += [reply.body] if reply.body is not None else []
            kinds += list(reply.events.values())
    return list(dict.fromkeys(kinds))


def build_openapi(*, version: str, operations: tuple[Operation, ...] = OPERATIONS) -> dict:
    """The OpenAPI 3.1 document of ``operations`` (all the gateway's routes by default)."""
    kinds = _struct_types(operations)
    _, schemas = msgspec.json.schema_components(kinds, ref_template=REF_TEMPLATE)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "TinyLlama Serve gateway",
            "version": version,
            "description": (
                "Authenticated, queued text generation. Errors are RFC 9457 "
                "`application/problem+json` (`ProblemBody`)."
            ),
        },
        "tags": [
            {"name": "inference", "description": "Submit prompts and follow jobs."},
            {"name": "operations", "description": "Probes for load balancers and orchestrators."},
        ],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "responses": {_problem_name(s): _problem_response(s) for s in sorted(PROBLEMS)},
            "parameters": _PARAMETERS,
            "headers": _HEADERS,
            "links": _LINKS,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A Cognito access token (RS256): `Authorization: Bearer`.",
                }
            },
        },
    }


def package_version() -> str:
    """The installed package's version, or ``0.0.0+local`` when run from a checkout."""
    try:
        return importlib.metadata.version("tinyllama-serve")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0+local"


@functools.cache
def _document(version: str) -> bytes:
    return msgspec.json.encode(build_openapi(version=version))


routes = web.RouteTableDef()


@routes.get("/openapi.json")
async def openapi_handler(request: web.Request) -> web.Response:
    """The OpenAPI document (no auth: it describes, it grants nothing)."""
    return web.Response(body=_document(package_version()), content_type=JSON)
