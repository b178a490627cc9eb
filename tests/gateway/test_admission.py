"""Admission: rate limits, the queue bound, idempotency, deadlines, request ids, logs."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from services.gateway.http.app import create_app
from services.protocol import names


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _app_client(aiohttp_client, settings, **changes):
    return await aiohttp_client(create_app(dataclasses.replace(settings, **changes)))


async def test_rate_limit_is_429_with_retry_after(
    aiohttp_client, gateway_settings, make_token, redis
):
    """Beyond the per-user rate, requests get 429 with a Retry-After header."""
    client = await _app_client(aiohttp_client, gateway_settings, rate_limit=2.0)
    headers = _auth(make_token("speedy"))
    statuses = []
    for _ in range(6):
        response = await client.post("/infer?mode=async", json={"prompt": "hi"}, headers=headers)
        statuses.append(response.status)
        if response.status == 429:
            assert int(response.headers["Retry-After"]) >= 1
            body = await response.json()
            assert body["type"].endswith("/rate-limited")
    assert statuses[:2] == [202, 202]
    assert 429 in statuses


async def test_rate_limit_is_per_user(aiohttp_client, gateway_settings, make_token, redis):
    """One user hitting the limit does not limit another."""
    client = await _app_client(aiohttp_client, gateway_settings, rate_limit=1.0)
    for _ in range(3):
        await client.post(
            "/infer?mode=async", json={"prompt": "hi"}, headers=_auth(make_token("noisy"))
        )
    response = await client.post(
        "/infer?mode=async", json={"prompt": "hi"}, headers=_auth(make_token("quiet"))
    )
    assert response.status == 202


async def test_rate_limit_holds_across_gateway_replicas(
    aiohttp_client, gateway_settings, make_token, redis
):
    """Two gateway processes share one bucket per user (it lives in Redis)."""
    first = await _app_client(aiohttp_client, gateway_settings, rate_limit=1.0)
    second = await _app_client(aiohttp_client, gateway_settings, rate_limit=1.0)
    headers = _auth(make_token("roamer"))
    one = await first.post("/infer?mode=async", json={"prompt": "a"}, headers=headers)
    two = await second.post("/infer?mode=async", json={"prompt": "b"}, headers=headers)
    assert (one.status, two.status) == (202, 429)


async def test_full_queue_is_429_and_nothing_is_added(
    aiohttp_client, gateway_settings, make_token, redis
):
    """A queue at its bound refuses new jobs fast (429 + Retry-After) and stays at the bound."""
    client = await _app_client(aiohttp_client, gateway_settings, max_queue_depth=3)
    statuses = []
    for i in range(5):
        response = await client.post(
            "/infer?mode=async", json={"prompt": f"p{i}"}, headers=_auth(make_token(f"u{i}"))
        )
        statuses.append(response.status)
    assert statuses == [202, 202, 202, 429, 429]
    assert await redis.zcard(names.QUEUE_NAME) == 3


async def test_idempotency_key_returns_the_same_job(gateway, make_token, redis):
    """The same Idempotency-Key from the same user gives the same job, queued once."""
    headers = {**_auth(make_token("ida")), "Idempotency-Key": "order-42"}
    first = await (
        await gateway.post("/infer?mode=async", json={"prompt": "x"}, headers=headers)
    ).json()
    second = await (
        await gateway.post("/infer?mode=async", json={"prompt": "x"}, headers=headers)
    ).json()
    assert first["id"] == second["id"]
    assert await redis.zcard(names.QUEUE_NAME) == 1


async def test_idempotency_keys_are_per_user(gateway, make_token, redis):
    """Two users using the same key get two different jobs."""
    ids = set()
    for user in ("u1", "u2"):
        headers = {**_auth(make_token(user)), "Idempotency-Key": "same"}
        response = await gateway.post("/infer?mode=async", json={"prompt": "x"}, headers=headers)
        ids.add((await response.json())["id"])
    assert len(ids) == 2


async def test_job_past_its_deadline_reads_expired(
    aiohttp_client, gateway_settings, make_token, redis
):
    """A job nobody started before its deadline reports `expired` and drops from ARQ."""
    client = await _app_client(aiohttp_client, gateway_settings, job_deadline_s=0.3)
    headers = _auth(make_token("late"))
    response = await client.post("/infer?mode=async", json={"prompt": "x"}, headers=headers)
    url = response.headers["Location"]
    await asyncio.sleep(0.5)
    job = await (await client.get(url, headers=headers)).json()
    assert job["status"] == "expired"
    job_id = url.rsplit("/", 1)[1]
    assert not await redis.exists(f"arq:job:{job_id}")  # ARQ will never run it


async def test_wait_mode_answers_202_when_the_wait_runs_out(
    aiohttp_client, gateway_settings, make_token, redis
):
    """With no worker, mode=wait gives up after the wait timeout with 202 and the job URL."""
    client = await _app_client(aiohttp_client, gateway_settings, wait_timeout_s=0.2)
    started = time.monotonic()
    response = await client.post("/infer", json={"prompt": "x"}, headers=_auth(make_token()))
    assert response.status == 202
    assert time.monotonic() - started < 5
    assert (await response.json())["status"] == "queued"


async def test_cancel_a_queued_job(gateway, make_token, redis):
    """DELETE on a queued job removes it from the queue and reports it cancelled."""
    headers = _auth(make_token("canceller"))
    response = await gateway.post("/infer?mode=async", json={"prompt": "x"}, headers=headers)
    url = response.headers["Location"]
    deleted = await gateway.delete(url, headers=headers)
    assert deleted.status == 200
    assert (await deleted.json())["status"] == "cancelled"
    assert await redis.zcard(names.QUEUE_NAME) == 0


async def test_cancelling_a_finished_job_is_a_409(gateway, make_token, redis):
    """DELETE on a job that has already ended says so (409 already-finished), not a silent 200."""
    headers = _auth(make_token("late"))
    response = await gateway.post("/infer?mode=async", json={"prompt": "x"}, headers=headers)
    url = response.headers["Location"]
    assert (await gateway.delete(url, headers=headers)).status == 200
    again = await gateway.delete(url, headers=headers)
    assert again.status == 409
    problem = await again.json()
    assert problem["type"].endswith("/already-finished")
    assert "cancelled" in problem["detail"]


async def test_request_id_is_echoed_or_generated(gateway):
    """X-Request-Id is echoed when given and generated when not."""
    given = await gateway.get("/health", headers={"X-Request-Id": "abc-123"})
    assert given.headers["X-Request-Id"] == "abc-123"
    made = await gateway.get("/health")
    assert len(made.headers["X-Request-Id"]) == 32


async def test_problem_carries_the_request_id(gateway):
    """Error bodies name the request id, so a user's report can be found in the logs."""
    response = await gateway.get("/jobs/x", headers={"X-Request-Id": "trace-me"})
    assert (await response.json())["request_id"] == "trace-me"


async def test_access_log_is_json_with_forwarded_for_and_no_secrets(gateway, make_token, caplog):
    """Access logs record X-Forwarded-For and the request id, never tokens or prompts."""
    token = make_token("logger")
    with caplog.at_level(logging.INFO, logger="tinyllama"):
        await gateway.post(
            "/infer?mode=async",
            json={"prompt": "my secret prompt"},
            headers={**_auth(token), "X-Forwarded-For": "203.0.113.9", "X-Request-Id": "rid-1"},
        )
        await gateway.post(
            "/infer", json={"prompt": "x"}, headers={"Authorization": "Bearer not-a-real-token-zzz"}
        )
    records = [r for r in caplog.records if r.name == "tinyllama.gateway.access"]
    assert any(
        getattr(r, "forwarded_for", "") == "203.0.113.9" and r.request_id == "rid-1"
        for r in records
    )
    from services.protocol.logs import JsonFormatter

    text = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert token not in text
    assert "not-a-real-token-zzz" not in text
    assert "my secret prompt" not in text


async def test_metrics_count_requests_by_route_template_and_status(gateway, make_token):
    """/metrics counts requests per route template (not raw path) and status."""
    headers = _auth(make_token("counted"))
    await gateway.post("/infer?mode=async", json={"prompt": "x"}, headers=headers)
    await gateway.get("/jobs/abc", headers=headers)
    await gateway.get("/jobs/def", headers=headers)
    text = await (await gateway.get("/metrics")).text()
    assert (
        'tinyllama_gateway_http_requests_total{method="POST",route="/infer",status="202"} 1.0'
        in text
    )
    assert (
        "tinyllama_gateway_http_requests_total"
        '{method="GET",route="/jobs/{job_id}",status="404"} 2.0' in text
    )
    assert "tinyllama_gateway_queue_depth 1.0" in text


async def test_redis_outage_is_503_not_500(aiohttp_client, gateway_settings, make_token):
    """With Redis gone the gateway answers 503 problem+json with Retry-After, never a 500."""
    from services.devstack.redis_server import start_redis_server

    url, process = start_redis_server()
    try:
        settings = dataclasses.replace(gateway_settings, redis_url=url)
        client = await aiohttp_client(create_app(settings))
        process.kill()
        process.wait(timeout=10)
        response = await client.post(
            "/infer?mode=async", json={"prompt": "x"}, headers=_auth(make_token("unlucky"))
        )
        assert response.status == 503
        assert response.headers["Retry-After"] == "2"
        assert (await response.json())["type"].endswith("/unavailable")
        assert (await client.get("/health")).status == 200
        ready = await client.get("/ready")
        assert ready.status == 503
        assert "redis unreachable" in (await ready.json())["reason"]
    finally:
        if process.poll() is None:
            process.kill()
