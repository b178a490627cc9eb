"""The OpenAPI document: valid 3.1, generated from the Structs, covering every route."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from aiohttp import web
from openapi_spec_validator import OpenAPIV31SpecValidator

from services.gateway.http import openapi
from services.gateway.http.app import create_app, openapi_document
from services.gateway.http.openapi import REF_TEMPLATE, build_openapi
from services.gateway.http.problems import PROBLEM_CONTENT_TYPE, ProblemBody
from services.gateway.settings import GatewaySettings
from services.protocol.messages import GenerateRequest

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def with_openapi(app: web.Application) -> web.Application:
    """Add ``GET /openapi.json`` unless ``create_app`` already wires it."""
    if not any(r.canonical == "/openapi.json" for r in app.router.resources()):
        app.add_routes(openapi.routes)
    return app


def registered_operations(app: web.Application) -> set[tuple[str, str]]:
    """(method, path template) of every route the app serves; aiohttp's implicit HEADs left out."""
    found = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue  # added for every GET (allow_head): same operation, no body
        path = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", route.resource.canonical)
        found.add((route.method.lower(), path))
    return found


def documented_operations(doc: dict) -> set[tuple[str, str]]:
    """(method, path template) of every operation in the document."""
    return {(m, p) for p, item in doc["paths"].items() for m in item if m in HTTP_METHODS}


def refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` value anywhere in a JSON tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(doc: dict, ref: str) -> Any:
    """Follow a local JSON pointer (``#/a/b``) or raise ``KeyError``."""
    assert ref.startswith("#/"), f"non-local $ref {ref!r}"
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def deref(doc: dict, node: dict) -> dict:
    """A response/parameter/header object with its ``$ref`` (if any) followed."""
    return resolve(doc, node["$ref"]) if "$ref" in node else node


def operations(doc: dict) -> Iterator[tuple[str, str, dict]]:
    """(method, path, operation object) for every operation."""
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in HTTP_METHODS:
                yield method, path, op


@pytest.fixture(scope="module")
def doc() -> dict:
    """The document as the gateway builds it."""
    return openapi_document(version="1.2.3")


@pytest.fixture(scope="module")
def app() -> web.Application:
    """The real application, routes registered, not started (no Redis needed)."""
    return with_openapi(create_app(GatewaySettings(jwks_url="file:///nonexistent/jwks.json")))


def test_document_is_valid_openapi_31(doc):
    """openapi-spec-validator accepts the document as OpenAPI 3.1."""
    assert doc["openapi"].startswith("3.1.")
    OpenAPIV31SpecValidator(doc).validate()
    assert doc["info"]["version"] == "1.2.3"


def test_every_registered_route_is_documented(app, doc):
    """Each route in the app's router has an operation (declared with ``@operation``)."""
    missing = registered_operations(app) - documented_operations(doc)
    assert not missing, f"routes without an OpenAPI operation: {sorted(missing)}"


def test_every_documented_operation_is_a_route(app, doc):
    """The document describes no route the app does not serve."""
    phantom = documented_operations(doc) - registered_operations(app)
    assert not phantom, f"documented but not served: {sorted(phantom)}"


def test_every_ref_resolves(doc):
    """Every ``$ref`` points at something that exists."""
    found = list(refs(doc))
    assert found
    for ref in found:
        resolve(doc, ref)


def test_operation_ids_are_unique(doc):
    """operationIds are unique (links and client generators rely on it)."""
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids))


def test_schemas_are_generated_from_the_structs(doc):
    """Component schemas are msgspec's own, so the document cannot drift from the decoder."""
    _, expected = msgspec.json.schema_components(
        [GenerateRequest, ProblemBody], ref_template=REF_TEMPLATE
    )
    for name in ("GenerateRequest", "ProblemBody"):
        assert doc["components"]["schemas"][name] == expected[name]


def test_every_problem_is_problem_json(doc):
    """Every 4xx/5xx response is application/problem+json with ProblemBody, and nothing else,
    except on /v1, where every one is OpenAI's error object (and a 422 is a 400)."""
    for method, path, op in operations(doc):
        openai_route = path.startswith("/v1/")
        media, body = (
            ("application/json", "OpenAIErrorResponse")
            if openai_route
            else (PROBLEM_CONTENT_TYPE, "ProblemBody")
        )
        for status, response in op["responses"].items():
            response = deref(doc, response)
            if path == "/ready" and status == "503":
                continue  # readiness answers 503 with a ReadyResponse, by design
            if int(status) >= 400:
                assert list(response["content"]) == [media], (method, path, status)
                schema = response["content"][media]["schema"]
                assert schema == {"$ref": f"#/components/schemas/{body}"}
        assert not (openai_route and "422" in op["responses"]), (method, path)


def test_every_operation_documents_its_errors(doc):
    """500 everywhere; 401 (WWW-Authenticate) where auth is needed; Retry-After with 429."""
    for method, path, op in operations(doc):
        responses = {s: deref(doc, r) for s, r in op["responses"].items()}
        assert "500" in responses, (method, path)
        if op["security"]:
            header = responses["401"]["headers"]["WWW-Authenticate"]
            assert deref(doc, header)["required"] is True
        else:
            assert "401" not in responses, (method, path)
        if "429" in responses:
            assert deref(doc, responses["429"]["headers"]["Retry-After"])["required"] is True


def test_infer_documents_modes_bodies_and_streaming(doc):
    """POST /infer: the request Struct, mode enum, idempotency header, 202 and an SSE 200."""
    op = doc["paths"]["/infer"]["post"]
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/GenerateRequest"}
    params = {p["name"]: p for p in (deref(doc, p) for p in op["parameters"])}
    assert params["mode"]["schema"]["enum"] == ["wait", "async", "stream"]
    assert params["Idempotency-Key"]["in"] == "header"
    assert params["X-Request-Id"]["in"] == "header"
    assert set(op["responses"]) >= {"200", "202", "400", "401", "403", "413", "415", "422", "429"}
    assert "text/event-stream" in op["responses"]["200"]["content"]
    assert op["security"] == [{"bearerAuth": []}]
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_an_operation_is_declared_beside_its_handler():
    """``@operation`` on a handler is all a route needs to appear in the document."""
    routes = web.RouteTableDef()

    @routes.get("/extra")
    @openapi.operation(
        operation_id="getExtra",
        summary="Extra",
        tag="operations",
        replies={200: openapi.Reply(description="ok", body=ProblemBody)},
        problems=(401,),
    )
    async def extra(request: web.Request) -> web.Response:
        return web.Response()

    doc = build_openapi(version="0", operations=openapi.documented(openapi.table_routes([routes])))
    OpenAPIV31SpecValidator(doc).validate()
    # Authenticated: a bad token (401), a missing scope (403) and a lost queue (503) are implied.
    assert set(doc["paths"]["/extra"]["get"]["responses"]) == {"200", "401", "403", "500", "503"}


def test_a_route_without_a_declaration_is_refused():
    """A handler with no ``@operation`` cannot be left out of the document silently."""
    routes = web.RouteTableDef()

    @routes.get("/undocumented")
    async def undocumented(request: web.Request) -> web.Response:
        return web.Response()

    with pytest.raises(LookupError, match="/undocumented"):
        openapi.documented(openapi.table_routes([routes]))


async def test_openapi_json_is_served_without_auth(aiohttp_client, gateway_settings, redis):
    """GET /openapi.json answers 200 JSON with no Authorization header."""
    client = await aiohttp_client(with_openapi(create_app(gateway_settings)))
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/json")
    served = await response.json()
    assert served["paths"].keys() == openapi_document(version="x")["paths"].keys()
    assert response.headers["X-Request-Id"]
