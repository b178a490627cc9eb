"""GPU lifecycle, local backend: real worker processes started and stopped by the gateway."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from services.gateway.http.app import create_app
from services.worker.metering import add_gpu_seconds
from tests.support import wait_gpu

pytestmark = pytest.mark.slow
ADMIN = ("tinyllama/admin",)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_request_starts_idle_stops_operator_stops(
    aiohttp_client, fleet_settings, local_backend, make_token, redis
):
    """A job starts the stopped worker, idle=1 stops it, /gpu/stop stops it at once."""
    client = await aiohttp_client(create_app(fleet_settings, fleet_backend=local_backend))
    user = _auth(make_token("gpu-user"))
    admin = _auth(make_token("ops", scopes=ADMIN))
    assert (await (await client.get("/gpu", headers=user)).json())["state"] == "stopped"
    ready = await (await client.get("/ready")).json()
    assert ready["ready"] is True
    assert "on demand" in ready["reason"]

    response = await client.post(
        "/infer?mode=async", json={"prompt": "hi", "idle": 1, "max_new_tokens": 8}, headers=user
    )
    url = response.headers["Location"]
    first = await (await client.get(url, headers=user)).json()
    assert first["status"] == "starting"
    for _ in range(600):
        job = await (await client.get(url, headers=user)).json()
        if job["status"] == "succeeded":
            break
        await asyncio.sleep(0.1)
    assert job["status"] == "succeeded"
    gpu = await wait_gpu(client, user, "ready", timeout_s=5)
    assert gpu["workers_ready"] == 1
    assert local_backend.pid

    stopped = await wait_gpu(client, user, "stopped", timeout_s=30)
    assert "idle" in stopped["reason"]
    assert local_backend.pid is None

    again = await client.post(
        "/infer", json={"prompt": "again", "max_new_tokens": 8, "idle": 30}, headers=user
    )
    assert (await again.json())["status"] == "succeeded"
    assert (await client.post("/gpu/stop", headers=user)).status == 403
    assert (await client.post("/gpu/stop", headers=admin)).status == 202
    await wait_gpu(client, user, "stopped", timeout_s=30)
    assert local_backend.pid is None

    usage = await (await client.get("/usage", headers=user)).json()
    assert usage["month"]["jobs"] == 2
    assert usage["month"]["completion_tokens"] > 0
    assert usage["month"]["gpu_seconds"] > 0
    assert "subjects" not in usage
    operator = await (await client.get("/usage", headers=admin)).json()
    assert operator["gpu_seconds_month"] > 0
    assert operator["gpu_cost_month_usd"] > 0
    assert operator["subjects"]["gpu-user"]["jobs"] == 2

    metrics = await (await client.get("/metrics")).text()
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in metrics.splitlines()
        if line and not line.startswith("#")
    }
    assert (
        values["tinyllama_gateway_month_generation_tokens"] == usage["month"]["completion_tokens"]
    )
    assert values["tinyllama_gateway_month_gpu_seconds"] > 0
    assert values['tinyllama_gateway_fleet_state{state="stopped"}'] == 1.0


async def test_budget_hard_stop_refuses_jobs_and_stops_the_fleet(
    aiohttp_client, fleet_settings, local_backend, make_token, redis
):
    """At the hard stop new jobs get 402 problem+json and a running fleet is stopped."""
    settings = dataclasses.replace(
        fleet_settings, budget_hard_stop_usd=0.01, gpu_hourly_price_usd=3.6
    )
    client = await aiohttp_client(create_app(settings, fleet_backend=local_backend))
    assert (
        await client.post("/gpu/start", headers=_auth(make_token("ops", scopes=ADMIN)))
    ).status == 202
    await wait_gpu(client, _auth(make_token("ops")), "ready", timeout_s=90)
    await add_gpu_seconds(redis, 20.0, now=time.time())  # $0.02 at $3.60/h
    user = _auth(make_token("spender"))
    response = await client.post("/infer", json={"prompt": "hi"}, headers=user)
    assert response.status == 402
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert "budget" in (await response.json())["detail"]
    await wait_gpu(client, user, "stopped", timeout_s=30)
    assert local_backend.pid is None
    start = await client.post("/gpu/start", headers=_auth(make_token("ops", scopes=ADMIN)))
    assert start.status == 402


async def test_budget_warning_is_a_header_and_in_usage(
    aiohttp_client, gateway_settings, make_token, redis
):
    """Past the warning threshold jobs still run, with X-Budget-Warning; /usage says so."""
    settings = dataclasses.replace(gateway_settings, budget_warn_usd=0.01, gpu_hourly_price_usd=3.6)
    client = await aiohttp_client(create_app(settings))
    await add_gpu_seconds(redis, 20.0, now=time.time())
    user = _auth(make_token("warned"))
    response = await client.post("/infer?mode=async", json={"prompt": "hi"}, headers=user)
    assert response.status == 202
    assert "warning threshold" in response.headers["X-Budget-Warning"]
    usage = await (await client.get("/usage", headers=user)).json()
    assert usage["budget"]["status"] == "warning"
