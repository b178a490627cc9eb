"""The aiohttp application factory: middlewares, routes, resources."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.retry import Retry

from services.gateway.api import native, operations
from services.gateway.auth import Authenticator, JwksCache, TokenPolicy
from services.gateway.billing.budget import BudgetGate
from services.gateway.fleet.backends import FleetBackend, NoFleet
from services.gateway.fleet.backlog import publish_backlog
from services.gateway.fleet.controller import build_controller
from services.gateway.fleet.store import FleetStore
from services.gateway.http import openapi
from services.gateway.http.problems import (
    BODY_TIMEOUT,
    ERROR_RENDERERS,
    REQUEST_ID,
    Handler,
    problem_middleware,
)
from services.gateway.http.state import BACKEND, SETTINGS, STATE, GatewayState
from services.gateway.jobs.hub import EventHub
from services.gateway.jobs.service import JobService
from services.gateway.jobs.store import REAP_BATCH, JobStore
from services.gateway.metrics import GatewayMetrics
from services.gateway.openai_api import errors as openai_errors
from services.gateway.openai_api import routes as openai_routes
from services.gateway.settings import GatewaySettings

log = logging.getLogger("tinyllama.gateway")
access_log = logging.getLogger("tinyllama.gateway.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Accept a sane ``X-Request-Id`` or make one; echo it; log one JSON line per request."""
    given = request.headers.get("X-Request-Id", "")
    request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        if not response.prepared:
            response.headers["X-Request-Id"] = request_id
        return response
    except web.HTTPException as exc:
        status = exc.status
        exc.headers["X-Request-Id"] = request_id
        raise
    finally:
        elapsed = time.perf_counter() - started
        state = request.app.get(STATE)
        if state is not None:
            # Label by route template (/jobs/{job_id}), never the raw path: bounded cardinality.
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            state.metrics.observe_request(
                route=route, method=request.method, status=status, seconds=elapsed
            )
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": request.method,
                    "path": request.path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "remote": request.remote,
                    "forwarded_for": request.headers.get("X-Forwarded-For", ""),
                },
            )


def route_tables() -> list[web.RouteTableDef]:
    """Every route the gateway serves: native API, operations, OpenAI-compatible, OpenAPI."""
    return [native.routes, operations.routes, openai_routes.routes, openapi.routes]


def openapi_document(*, version: str) -> dict:
    """The OpenAPI document of every route the gateway serves (what /openapi.json answers)."""
    operations = openapi.documented(openapi.table_routes(route_tables()))
    return openapi.build_openapi(version=version, operations=operations)


def create_app(
    settings: GatewaySettings, *, fleet_backend: FleetBackend | None = None
) -> web.Application:
    """Build the gateway; resources open and close with the app's cleanup contexts.

    ``fleet_backend`` starts and stops GPU workers (``None``: they run on their own).
    """
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[request_id_middleware, problem_middleware],
    )
    app[SETTINGS] = settings
    app[BODY_TIMEOUT] = settings.body_timeout_s
    app[ERROR_RENDERERS] = {openai_errors.PREFIX: openai_errors.openai_error_response}
    app[BACKEND] = fleet_backend or NoFleet()
    app[openapi.DOCUMENT] = {}
    app.cleanup_ctx.append(_resources)
    app.on_shutdown.append(_end_streams)
    for table in route_tables():
        app.add_routes(table)
    return app


def open_redis(settings: GatewaySettings) -> Redis:
    """One bounded pool per process, with timeouts on every command.

    A hung Redis answers within ``redis_timeout_s`` (a 503 with ``Retry-After``), a
    full pool makes a request wait that long for a connection and no longer, and a
    connection that died with a restarted Redis is replaced once, at once.
    """
    timeout = settings.redis_timeout_s
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), retries=1),
        retry_on_error=[RedisConnectionError],
    )
    return Redis.from_pool(pool)


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    redis = open_redis(settings)
    hub = EventHub(
        redis,
        block_ms=max(1, int(min(1.0, settings.redis_timeout_s / 2) * 1000)),
        max_per_job=settings.max_streams_per_job,
        max_per_subject=settings.max_streams_per_subject,
    )
    session = aiohttp.ClientSession()
    jwks = JwksCache(
        settings.jwks_url,
        session,
        refresh_s=settings.jwks_refresh_s,
        unknown_kid_interval_s=settings.jwks_unknown_kid_interval_s,
    )
    with contextlib.suppress(Exception):
        await jwks.refresh()  # warm the cache; a failure here is retried on first use
    policy = TokenPolicy(
        issuer=settings.jwt_issuer,
        client_ids=settings.jwt_client_ids,
        audiences=settings.jwt_audiences,
        allow_id_tokens=settings.allow_id_tokens,
        leeway_s=settings.jwt_leeway_s,
        admin_scope=settings.admin_scope,
        admin_groups=settings.admin_groups,
        required_scope=settings.required_scope,
    )
    backend = app[BACKEND]
    controlled = settings.fleet != "none"
    store = JobStore(redis, queue_name=settings.queue_name, ttl_s=settings.result_ttl_s)
    fleet = FleetStore(redis)
    budget = BudgetGate(
        redis,
        hourly_price_usd=settings.gpu_hourly_price_usd,
        warn_usd=settings.budget_warn_usd,
        hard_stop_usd=settings.budget_hard_stop_usd,
    )
    metrics = GatewayMetrics()
    state = GatewayState(
        settings=settings,
        redis=redis,
        authenticator=Authenticator(jwks=jwks, policy=policy),
        jobs=JobService(
            store=store,
            hub=hub,
            fleet=fleet if controlled else None,
            budget=budget,
            settings=settings,
            metrics=metrics,
        ),
        fleet=fleet,
        budget=budget,
        metrics=metrics,
        fleet_backend=backend,
    )
    tasks = [
        asyncio.create_task(hub.run()),
        asyncio.create_task(jwks.run_refresh_timer()),
        asyncio.create_task(_reap_forever(store, period_s=1.0)),
    ]
    if controlled:
        state.controller = build_controller(
            fleet=fleet, jobs=store, backend=backend, budget=budget, settings=settings
        )
        tasks.append(asyncio.create_task(state.controller.run()))
    if settings.publish_metrics:
        tasks.append(
            asyncio.create_task(
                publish_backlog(
                    store,
                    env=settings.env,
                    fleet=fleet,
                    hourly_price_usd=settings.gpu_hourly_price_usd,
                )
            )
        )
    app[STATE] = state
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if state.controller is not None:
            await state.controller.release()
        await backend.close()
        await session.close()
        await redis.aclose()


async def _end_streams(app: web.Application) -> None:
    """Shutdown begins: streams end with a resumable event, before connections are drained."""
    state = app.get(STATE)
    if state is not None:
        state.jobs.end_streams()


async def _reap_forever(store: JobStore, *, period_s: float) -> None:
    """End jobs whose deadline passed with no worker to run them, with or without traffic."""
    while True:
        try:
            while await store.reap() >= REAP_BATCH:
                pass  # a backlog of expired jobs: keep going until it is cleared
        except (RedisError, OSError) as exc:
            log.warning("reaping expired jobs failed: %s", type(exc).__name__)
        await asyncio.sleep(period_s)
