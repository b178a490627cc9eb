"""The gateway's OpenAPI 3.1 document, collected from the routes themselves.

Each handler declares its operation beside its code (``@operation(...)``: summary,
request Struct, parameters, responses by status); ``build_openapi`` walks the route
tables and reads those declarations, so a route cannot exist undocumented and a
document entry cannot outlive its route. Schemas come from
``msgspec.json.schema_components``: they cannot drift from what the handlers decode
and encode. Every error is RFC 9457 ``application/problem+json`` with ``ProblemBody``,
except on operations that declare another ``ErrorShape`` (OpenAI's error object on ``/v1``).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec
from aiohttp import web

from services.gateway.http.problems import PROBLEM_CONTENT_TYPE, ProblemBody

OPENAPI_VERSION = "3.1.0"
REF_TEMPLATE = "#/components/schemas/{name}"
JSON = "application/json"
EVENT_STREAM = "text/event-stream"
JOB_ID_PATTERN = "^[0-9a-f]{32}$"


# ---------------------------------------------------------------- what a handler declares


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
class ErrorShape:
    """How an operation's errors look: one body Struct under one media type, for every status."""

    name: str  # its responses are components/responses/<name><status>
    media_type: str
    body: type
    validation_status: int = 422  # the status a body that fails validation gets
    descriptions: Mapping[int, str] = dataclasses.field(default_factory=dict)  # over PROBLEMS'


PROBLEM_JSON = ErrorShape(name="Problem", media_type=PROBLEM_CONTENT_TYPE, body=ProblemBody)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Operation:
    """What one route takes and every status it answers with (its path and method: the route's)."""

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
    problems: tuple[int, ...] = ()  # statuses answered with an error body (see PROBLEMS)
    errors: ErrorShape = PROBLEM_JSON  # what that body is


_ATTRIBUTE = "openapi_operation"
Handler = Callable[..., Awaitable[web.StreamResponse]]


def operation(**spec: Any) -> Callable[[Handler], Handler]:
    """Declare a handler's operation beside it (under the ``@routes.<method>`` decorator)."""
    declared = Operation(**spec)

    def attach(handler: Handler) -> Handler:
        setattr(handler, _ATTRIBUTE, declared)
        return handler

    return attach


@dataclasses.dataclass(frozen=True, kw_only=True)
class Documented:
    """A route and the operation its handler declares."""

    method: str
    path: str
    operation: Operation


def documented(routes: Iterable[tuple[str, str, Handler]]) -> list[Documented]:
    """Each (method, path, handler)'s declared operation; a route without one is an error."""
    out = []
    for method, path, handler in routes:
        if method.upper() == "HEAD":  # aiohttp adds HEAD beside every GET
            continue
        declared = getattr(handler, _ATTRIBUTE, None)
        if declared is None:
            raise LookupError(f"{method} {path} declares no @operation")
        out.append(Documented(method=method.lower(), path=path, operation=declared))
    return out


def table_routes(tables: Iterable[web.RouteTableDef]) -> list[tuple[str, str, Handler]]:
    """The routes of aiohttp route tables, as ``documented`` takes them."""
    return [
        (route.method, route.path, route.handler)
        for table in tables
        for route in table
        if isinstance(route, web.RouteDef)
    ]


def router_routes(router: web.UrlDispatcher) -> list[tuple[str, str, Handler]]:
    """The routes an application serves, as ``documented`` takes them."""
    return [
        (route.method, route.resource.canonical, route.handler)
        for route in router.routes()
        if route.resource is not None
    ]


# The problem+json responses every operation can point at, by status.
PROBLEMS: dict[int, tuple[str, tuple[str, ...]]] = {
    400: ("Bad request: the body is not JSON, or a parameter or header is invalid.", ()),
    401: ("Missing, malformed, expired or otherwise invalid bearer token.", ("WWW-Authenticate!",)),
    402: ("The environment's monthly GPU budget is spent: no new work until it is raised.", ()),
    403: ("The token is valid but lacks the scope this route needs.", ("WWW-Authenticate!",)),
    404: ("No such resource, or it belongs to someone else.", ()),
    408: ("The request body did not arrive within the body timeout.", ()),
    409: (
        "Conflict: the job had already ended (a cancel), or this deployment does not control "
        "its GPUs (TINYLLAMA_FLEET=none).",
        (),
    ),
    413: ("The request body is larger than the gateway accepts.", ()),
    415: ("The body must be sent as application/json.", ()),
    422: (
        "The body is JSON but fails validation, or prompt plus `max_new_tokens` cannot fit the "
        "served model's context (`context-length-exceeded`); `errors` names each field path.",
        (),
    ),
    429: (
        "Rate limit reached, or the queue is full: retry after `Retry-After` s.",
        ("Retry-After!",),
    ),
    500: ("Unexpected failure (a bug): the body says to see the server logs.", ()),
    503: (
        "The gateway cannot serve this right now (the queue is unreachable): retry after "
        "`Retry-After` s.",
        (),
    ),
}

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


def _problem_name(shape: ErrorShape, status: int) -> str:
    return f"{shape.name}{status}"


def _problem_response(shape: ErrorShape, status: int) -> dict[str, Any]:
    description, headers = PROBLEMS[status]
    return {
        "description": shape.descriptions.get(status, description),
        "headers": _header_refs(headers),
        "content": {shape.media_type: {"schema": _schema_ref(shape.body)}},
    }


def _error_responses(shapes: Iterable[ErrorShape]) -> dict[str, Any]:
    """Every shape's response for every status in PROBLEMS (a 422 only where validation is)."""
    return {
        _problem_name(shape, status): _problem_response(shape, status)
        for shape in shapes
        for status in sorted(PROBLEMS)
        if status != 422 or shape.validation_status == 422
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
    # Every authenticated route can refuse a token or its scope, and lose Redis (503);
    # every route with a body can time out reading it.
    implied = {500} | ({401, 403, 503} if op.auth else set()) | ({408} if op.request else set())
    shape = op.errors
    statuses = {shape.validation_status if s == 422 else s for s in {*op.problems, *implied}}
    for status in sorted(statuses):
        responses[str(status)] = {"$ref": f"#/components/responses/{_problem_name(shape, status)}"}
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


def _struct_types(operations: Sequence[Documented]) -> list[type]:
    kinds: list[type] = [ProblemBody, *(d.operation.errors.body for d in operations)]
    for op in (d.operation for d in operations):
        if op.request is not None:
            kinds.append(op.request)
        for reply in op.replies.values():
            kinds += [reply.body] if reply.body is not None else []
            kinds += list(reply.events.values())
    return list(dict.fromkeys(kinds))


def build_openapi(*, version: str, operations: Sequence[Documented]) -> dict:
    """The OpenAPI 3.1 document of ``operations`` (``documented(...)`` of some routes)."""
    kinds = _struct_types(operations)
    shapes = {
        shape.name: shape for shape in [PROBLEM_JSON, *(d.operation.errors for d in operations)]
    }
    _, schemas = msgspec.json.schema_components(kinds, ref_template=REF_TEMPLATE)
    paths: dict[str, dict[str, Any]] = {}
    for item in sorted(operations, key=lambda d: (d.path, d.method)):
        paths.setdefault(item.path, {})[item.method] = _operation(item.operation)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "TinyLlama Serve gateway",
            "version": version,
            "description": (
                "Authenticated, queued text generation. Errors are RFC 9457 "
                "`application/problem+json` (`ProblemBody`), except on the OpenAI-compatible "
                "`/v1` routes, which answer OpenAI's error object (`OpenAIErrorResponse`)."
            ),
        },
        "tags": [
            {"name": "inference", "description": "Submit prompts and follow jobs."},
            {"name": "operations", "description": "Probes for load balancers and orchestrators."},
        ],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "responses": _error_responses(shapes.values()),
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


DOCUMENT: web.AppKey[dict[str, bytes]] = web.AppKey("openapi_document", dict)
routes = web.RouteTableDef()


@routes.get("/openapi.json")
@operation(
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
)
async def openapi_handler(request: web.Request) -> web.Response:
    """The OpenAPI document of the routes this app serves (no auth: it grants nothing)."""
    cache = request.app[DOCUMENT]
    if "body" not in cache:
        operations = documented(router_routes(request.app.router))
        cache["body"] = msgspec.json.encode(
            build_openapi(version=package_version(), operations=operations)
        )
    return web.Response(body=cache["body"], content_type=JSON)
