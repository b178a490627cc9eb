"""Property-based contract test: the live gateway answers as its OpenAPI document says.

Schemathesis generates requests from the document the gateway serves at
``/openapi.json`` (valid and invalid ones), sends them over a real socket
with a valid bearer token, and checks every response: no 5xx, a documented
status, the documented content type, headers and body schema.

There is no worker: ``mode=wait`` (also the default) gives up after the
gateway's wait timeout, set to 50 ms here, and answers 202 as documented.
``mode=stream`` would hold its SSE stream open until the job's deadline, so
it is filtered out of generation (the streaming path has its own tests with
a real worker).
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis as redis_sync
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.gateway.http.app import create_app, openapi_document
from services.gateway.http.openapi import package_version
from services.gateway.settings import GatewaySettings
from services.protocol import names
from tests.conftest import CLIENT_ID, ISSUER
from tests.gateway.test_openapi import with_openapi

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


class LiveGateway:
    """The real app on 127.0.0.1:<free port>, served from its own thread and event loop.

    Schemathesis calls are blocking, so the server cannot share the test's loop.
    """

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner = web.AppRunner(app, access_log=None)
        self.url = ""

    def _run(self, coro, timeout_s: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    async def _start(self) -> str:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        """Start listening; return the base URL."""
        self._thread.start()
        self.url = self._run(self._start())
        return self.url

    def stop(self) -> None:
        """Run the cleanup contexts and stop the loop."""
        try:
            self._run(self._runner.cleanup())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


@pytest.fixture(scope="module")
def queue_name() -> str:
    """A queue of this run's own: no worker (ours or a parallel test run's) ever takes its jobs."""
    return f"arq:queue:contract-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def live_url(redis_url: str, queue_name: str, signing_key, tmp_path_factory) -> Iterator[str]:
    """The gateway on a real socket: test Redis, file JWKS, a private queue, 50 ms wait."""
    jwks = Path(tmp_path_factory.mktemp("jwks")) / "jwks.json"
    jwks.write_text(json.dumps({"keys": [signing_key.as_dict(private=False)]}))
    gateway_settings = GatewaySettings(
        env="local",
        redis_url=redis_url,
        jwt_issuer=ISSUER,
        jwks_url=jwks.as_uri(),
        jwt_client_ids=(CLIENT_ID,),
        rate_limit=10_000.0,
        max_queue_depth=100_000,
        queue_name=queue_name,
        wait_timeout_s=0.05,
        job_deadline_s=30.0,
        result_ttl_s=120,  # what this test leaves in the shared test database expires soon
    )
    # No model remembered from an earlier test: its context would refuse bodies the document
    # calls valid (`max_new_tokens` up to 4096 against a 2048-token model).
    with redis_sync.Redis.from_url(redis_url) as client:
        client.delete(names.SERVED_MODEL_KEY)
    server = LiveGateway(with_openapi(create_app(gateway_settings)))
    yield server.start()
    server.stop()
    client = redis_sync.Redis.from_url(redis_url)
    client.delete(queue_name)
    client.close()


@pytest.fixture(scope="module")
def auth_headers(signing_key) -> dict[str, str]:
    """A valid access token for one caller, minted by the test issuer."""
    from services.devstack.identity import mint_token

    # A subject of its own: rate bucket and idempotency keys start empty on every run.
    subject = f"contract-{uuid.uuid4().hex[:12]}"
    token = mint_token(signing_key, subject=subject, issuer=ISSUER, client_id=CLIENT_ID, ttl_s=3600)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    """One keep-alive session for all calls."""
    with requests.Session() as session:
        yield session


# Generated from the same builder the live /openapi.json serves (pinned by a test below);
# loaded at import time because schemathesis' lazy fixture loader does not run on pytest 9.
schema = schemathesis.openapi.from_dict(openapi_document(version=package_version()))


@schema.hook
def filter_query(context, query):
    """An SSE stream stays open until the job's deadline when no worker runs: not here."""
    return not (query and query.get("mode") == "stream")


@schema.hook
def filter_body(context, body):
    """``stream: true`` holds its SSE open until the job's deadline when no worker runs."""
    return not (isinstance(body, dict) and body.get("stream") is True)


@schema.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_gateway_honours_its_contract(case, live_url, auth_headers, http):
    """Generated requests get documented statuses, content types, headers and bodies; no 5xx."""
    if (case.query or {}).get("mode") == "stream":
        return  # the coverage phase does not run filter hooks; this example says nothing here
    if isinstance(case.body, dict) and case.body.get("stream") is True:
        return  # no worker: an OpenAI stream stays open until the job's deadline
    checks = CHECKS
    if case.operation.path in ("/ready", "/v1/chat/completions", "/v1/completions"):
        # No worker runs here: readiness answers its documented 503, and the OpenAI routes
        # their documented 504 when the (shortened) wait runs out. Neither is a server fault.
        checks = [c for c in CHECKS if c is not not_a_server_error]
    response = case.call_and_validate(
        base_url=live_url, session=http, headers=auth_headers, checks=checks, timeout=10
    )
    assert response.status_code != 500, response.text


# Positive examples only, for the one operation with a request body: a body the document
# calls valid must be accepted.
accepting = schemathesis.openapi.from_dict(openapi_document(version=package_version())).include(
    operation_id="infer"
)
accepting.config.generation.update(modes=[GenerationMode.POSITIVE])


INTEGER_FIELDS = ("max_new_tokens", "top_k", "seed", "idle")


@accepting.hook
def filter_body(context, body):  # noqa: F811 (schemathesis dispatches hooks by name)
    """Integer fields are strict JSON integers (26, not 26.0): the README says so.

    JSON Schema's `integer` also admits 26.0, which msgspec (strict) refuses with a clear 422.
    """
    return not (
        isinstance(body, dict) and any(isinstance(body.get(f), float) for f in INTEGER_FIELDS)
    )


@accepting.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
def test_documented_valid_bodies_are_accepted(case, live_url, auth_headers, http):
    """Every body the document calls valid is queued (202), not refused with 4xx."""
    case.query = {**(case.query or {}), "mode": "async"}  # the body is under test, not waiting
    if case.headers and "Idempotency-Key" in case.headers:
        # A key is bound to its first body: a generated key repeated with another body is
        # a (documented) 422, not a valid request. Each case gets a key of its own.
        case.headers = {**case.headers, "Idempotency-Key": uuid.uuid4().hex}
    case.call_and_validate(
        base_url=live_url,
        session=http,
        headers=auth_headers,
        checks=[not_a_server_error, positive_data_acceptance, status_code_conformance],
        timeout=10,
    )


def test_unauthenticated_calls_get_the_documented_401(live_url, http):
    """Without a token every protected operation answers a documented 401 with a challenge."""
    doc = http.get(f"{live_url}/openapi.json", timeout=5).json()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if not op.get("security"):
                continue
            url = live_url + path.replace("{job_id}", "0" * 32).replace("{model}", "tinyllama")
            response = http.request(method.upper(), url, timeout=5)
            assert response.status_code == 401, (method, path, response.text)
            assert "401" in op["responses"]
            assert response.headers["WWW-Authenticate"].startswith("Bearer ")
            if path.startswith("/v1/"):  # OpenAI's error object
                assert response.headers["Content-Type"].startswith("application/json")
                assert response.json()["error"]["code"] == "invalid_api_key"
                continue
            assert response.headers["Content-Type"].startswith("application/problem+json")
            assert urlsplit(response.json()["instance"]).path == urlsplit(url).path


def test_the_live_document_is_the_one_tested(live_url, http):
    """The document the gateway serves is the one the contract test generated from."""
    served = http.get(f"{live_url}/openapi.json", timeout=5).json()
    assert served == openapi_document(version=package_version())
