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

from services.gateway.admission import Admission
from services.gateway.auth import Authenticator, JwksCache, TokenPolicy
from services.gateway.problems import REQUEST_ID, Handler, problem_middleware
from services.gateway.routes import routes
from services.gateway.settings import GatewaySettings
from services.gateway.state import SETTINGS, STATE, GatewayState
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
        access_log.info(
            "request",
            extra={
                "request_id": request_id,
                "method": request.method,
                "path": request.path,
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "remote": request.remote,
                "forwarded_for": request.headers.get("X-Forwarded-For", ""),
            },
        )


def create_app(settings: GatewaySettings) -> web.Application:
    """Build the gateway; resources open and close with the app's cleanup contexts."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[request_id_middleware, problem_middleware],
    )
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_resources)
    app.add_routes(routes)
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
    app[STATE] = GatewayState(
        settings=settings,
        redis=redis,
        authenticator=Authenticator(jwks=jwks, policy=policy),
        admission=Admission(redis=redis, settings=settings),
    )
    refresher = asyncio.create_task(jwks.run_refresh_timer())
    try:
        yield
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
        await session.close()
        await redis.aclose()
