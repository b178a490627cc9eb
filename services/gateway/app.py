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
from arq.connections import RedisSettings, create_pool

from services.gateway import openai_api, openapi, operations
from services.gateway.admission import Admission
from services.gateway.auth import Authenticator, JwksCache, TokenPolicy
from services.gateway.backlog import publish_backlog
from services.gateway.fleet import FleetController, Observation
from services.gateway.fleet_backends import FleetBackend, NoFleet
from services.gateway.metrics import GatewayMetrics
from services.gateway.observe import observe
from services.gateway.problems import REQUEST_ID, Handler, problem_middleware
from services.gateway.routes import routes
from services.gateway.settings import GatewaySettings
from services.gateway.state import BACKEND, SETTINGS, STATE, GatewayState
from services.protocol.serializer import deserialize_job, serialize_job

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
            state.metrics.requests.labels(
                route=route, method=request.method, status=str(status)
            ).inc()
            state.metrics.latency.labels(route=route).observe(elapsed)
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
    app[BACKEND] = fleet_backend or NoFleet()
    app.cleanup_ctx.append(_resources)
    app.add_routes(routes)
    app.add_routes(operations.routes)
    app.add_routes(openapi.routes)
    app.add_routes(openai_api.routes)
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    redis_settings = RedisSettings.from_dsn(settings.redis_url)
    redis_settings.conn_retries = 30
    redis = await create_pool(
        redis_settings,
        job_serializer=serialize_job,
        job_deserializer=deserialize_job,
        default_queue_name=settings.queue_name,
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
    )
    backend = app[BACKEND]
    state = GatewayState(
        settings=settings,
        redis=redis,
        authenticator=Authenticator(jwks=jwks, policy=policy),
        admission=Admission(redis=redis, settings=settings),
        metrics=GatewayMetrics(),
        fleet_backend=backend,
    )
    tasks = [asyncio.create_task(jwks.run_refresh_timer())]
    if settings.fleet != "none":

        async def look(b: FleetBackend) -> Observation:
            return await observe(redis, b, settings=settings)

        state.controller = FleetController(
            redis=redis,
            backend=backend,
            observe=look,
            tick_s=settings.fleet_tick_s,
            start_timeout_s=settings.fleet_start_timeout_s,
        )
        tasks.append(asyncio.create_task(state.controller.run()))
    if settings.publish_metrics:
        tasks.append(asyncio.create_task(publish_backlog(redis, settings=settings)))
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
