"""The SDK against the real gateway: retries on 429 and 503, one job per call, typed results."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
from aiohttp import web
from redis.asyncio import Redis

from clients.models import Job
from clients.retry import RetryPolicy, parse_retry_after
from clients.sdk import ApiError, AsyncClient, Client
from services.protocol.names import QUEUE_NAME


def _recording_app(settings, seen: list[tuple[str, str]]) -> web.Application:
    """The gateway app, plus a middleware that records each submit's Idempotency-Key."""
    from services.gateway.http.app import create_app

    @web.middleware
    async def record(request: web.Request, handler):
        if request.method == "POST":
            seen.append((request.path, request.headers.get("Idempotency-Key", "")))
        return await handler(request)

    app = create_app(settings)
    app.middlewares.insert(0, record)
    return app


def _url(server) -> str:
    return str(server.make_url("")).rstrip("/")


def test_retry_policy_backs_off_then_honours_retry_after_then_gives_up():
    """0.5/1/2 s, or Retry-After when given; no 4th retry and no huge wait."""
    policy = RetryPolicy()
    assert [policy.delay(i, retry_after=None) for i in range(4)] == [0.5, 1.0, 2.0, None]
    assert policy.delay(0, retry_after=3.0) == 3.0
    assert policy.delay(0, retry_after=3600.0) is None
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", now=4.0) == 6.0
    assert parse_retry_after("soon") is None


async def test_sync_submit_retries_a_429_and_makes_one_job(
    aiohttp_client, gateway_settings, redis, make_token
):
    """A 429 with Retry-After is waited out and retried with the same key: one job in the queue."""
    seen: list[tuple[str, str]] = []
    settings = dataclasses.replace(gateway_settings, rate_limit=1.0)
    server = await aiohttp_client(_recording_app(settings, seen))
    client = Client(_url(server), make_token("retrier"))
    first = await asyncio.to_thread(client.submit, "one")
    started = time.monotonic()
    second = await asyncio.to_thread(client.submit, "two")
    assert time.monotonic() - started >= 0.9  # it waited for the bucket, per Retry-After
    assert isinstance(second, Job)
    assert second.status in ("queued", "starting")
    assert second.id != first.id
    keys = [key for path, key in seen if path == "/infer"]
    assert len(keys) == 3
    assert keys[1] == keys[2]
    assert keys[0] != keys[1]
    assert await redis.zcard(QUEUE_NAME) == 2


async def test_async_client_gives_up_with_the_problem_fields(
    aiohttp_client, gateway_settings, redis, make_token
):
    """No retries left: the 429 surfaces as ApiError with type, status, retry_after, request_id."""
    settings = dataclasses.replace(gateway_settings, rate_limit=1.0)
    server = await aiohttp_client(_recording_app(settings, []))
    no_retries = RetryPolicy(backoff_s=())
    async with AsyncClient(_url(server), make_token("impatient"), retry=no_retries) as c:
        await c.submit("one")
        with pytest.raises(ApiError) as caught:
            await c.submit("two")
    error = caught.value
    assert error.status == 429
    assert error.slug == "rate-limited"
    assert error.retry_after is not None
    assert error.retry_after > 0
    assert error.request_id
    assert error.title
    assert str(error).startswith(f"HTTP 429 from {_url(server)}/infer")


async def test_async_submit_rides_out_a_redis_outage_and_makes_one_job(
    aiohttp_client, gateway_settings, fault_redis, make_token
):
    """Redis down: 503 + Retry-After, retried with one key until Redis is back; one job made."""
    seen: list[tuple[str, str]] = []
    settings = dataclasses.replace(gateway_settings, redis_url=fault_redis.url, redis_timeout_s=0.5)
    server = await aiohttp_client(_recording_app(settings, seen))
    fault_redis.kill()

    async def restart_soon() -> None:
        await asyncio.sleep(0.8)
        await asyncio.to_thread(fault_redis.start)

    restarter = asyncio.create_task(restart_soon())
    async with AsyncClient(_url(server), make_token("patient")) as client:
        job = await client.submit("survive")
        await restarter
        assert (await client.get_job(job.id)).id == job.id
    keys = [key for path, key in seen if path == "/infer"]
    assert len(keys) >= 2
    assert len(set(keys)) == 1
    check = Redis.from_url(fault_redis.url)
    try:
        assert await check.zcard(QUEUE_NAME) == 1
    finally:
        await check.aclose()


async def test_sync_client_keeps_its_original_dict_api(gateway, make_token):
    """generate/job/cancel/usage still return the gateway's JSON as dicts."""
    client = Client(_url(gateway), make_token("classic"))
    job = await asyncio.to_thread(client.generate, "hi", mode="async")
    assert job["status"] in ("queued", "starting")
    assert (await asyncio.to_thread(client.job, job["id"]))["id"] == job["id"]
    cancelled = await asyncio.to_thread(client.cancel, job["id"])
    assert cancelled["status"] == "cancelled"
    usage = await asyncio.to_thread(client.usage)
    assert usage["subject"] == "classic"
    report = await asyncio.to_thread(client.usage_report)
    assert report.subject == "classic"


def test_an_openai_error_body_becomes_a_problem():
    """``/v1``'s OpenAI error object reads like a problem: its message, code and param kept."""
    from clients.models import problem_of

    raw = b'{"error": {"message": "n must be 1", "type": "invalid_request_error",'
    raw += b' "param": "n", "code": "unsupported_parameter"}}'
    problem = problem_of(raw)
    assert problem["detail"] == "n must be 1"
    assert problem["type"] == "unsupported_parameter"
    assert problem["errors"] == [{"path": "n", "message": "n must be 1"}]
