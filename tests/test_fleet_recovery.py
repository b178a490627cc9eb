"""The fleet recovers from what goes wrong at the worst moment: real gateway, workers, Redis.

Each test reproduces one way the gateway used to lose a job or lock clients out:
a wake-up erased by a tick, a crash that left the queue full and the GPU stopped, a
start that never came up, a job stranded `running` with nobody coming, a stream whose
client left while its job was still queued, and a fleet state left by a dead gateway.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
import time

import aiohttp
import pytest
from aiohttp import web

from services.gateway.fleet.backends import LocalFleet
from services.gateway.http.app import create_app
from tests.support import wait_gpu

pytestmark = pytest.mark.slow
ADMIN = ("tinyllama/admin",)
LONG = {"prompt": "the llama", "max_new_tokens": 1500, "idle": 1}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _gpu(client, headers) -> dict:
    return await (await client.get("/gpu", headers=headers)).json()


async def _wait_job(client, url: str, headers, states: set[str], timeout_s: float) -> dict:
    job: dict = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = await (await client.get(url, headers=headers)).json()
        if job["status"] in states:
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"job stayed {job.get('status')} for {timeout_s} s: {job}")


async def _warm(client, admin, user) -> None:
    assert (await client.post("/gpu/start", headers=admin)).status == 202
    gpu = await wait_gpu(client, user, "ready", timeout_s=90)
    assert gpu["workers_ready"] == 1


async def test_a_job_admitted_while_draining_starts_the_fleet_again(
    aiohttp_client, fleet_settings, local_backend, make_token, redis
):
    """Lost wake-up: a job that arrives while an operator stop drains still gets a worker."""
    client = await aiohttp_client(create_app(fleet_settings, fleet_backend=local_backend))
    user, admin = _auth(make_token("late")), _auth(make_token("ops", scopes=ADMIN))
    await _warm(client, admin, user)
    # Four long jobs keep the drain going for seconds even on the fast static engine.
    running = [await client.post("/infer?mode=async", json=LONG, headers=user) for _ in range(4)]
    await _wait_job(client, running[-1].headers["Location"], user, {"running"}, timeout_s=30)
    assert (await client.post("/gpu/stop", headers=admin)).status == 202
    # The controller sends SIGTERM: the worker drains its jobs and takes nothing new.
    await wait_gpu(client, user, "draining", timeout_s=5)
    response = await client.post(
        "/infer?mode=async", json={"prompt": "hi", "max_new_tokens": 4}, headers=user
    )
    assert response.status == 202
    job = await _wait_job(
        client, response.headers["Location"], user, {"succeeded", "failed"}, timeout_s=90
    )
    assert job["status"] == "succeeded", job


async def test_a_crashed_worker_does_not_lock_the_queue(
    aiohttp_client, fleet_settings, local_backend, make_token, redis
):
    """kill -9 with a full queue: the jobs resume on a new worker and new jobs get in again."""
    settings = dataclasses.replace(fleet_settings, max_queue_depth=2)
    client = await aiohttp_client(create_app(settings, fleet_backend=local_backend))
    user, admin = (
        _auth(
            make_token("crash"),
        ),
        _auth(make_token("ops", scopes=ADMIN)),
    )
    await _warm(client, admin, user)
    urls = []
    for _ in range(2):
        response = await client.post("/infer?mode=async", json=LONG, headers=user)
        assert response.status == 202
        urls.append(response.headers["Location"])
    for url in urls:
        await _wait_job(client, url, user, {"running"}, timeout_s=30)
    os.kill(local_backend.pid, signal.SIGKILL)
    full = await client.post("/infer?mode=async", json={"prompt": "x"}, headers=user)
    assert full.status == 429  # both jobs are alive: the bound holds
    for url in urls:
        job = await _wait_job(client, url, user, {"succeeded", "failed"}, timeout_s=90)
        assert job["status"] == "succeeded", job
    again = await client.post("/infer", json={"prompt": "again", "max_new_tokens": 4}, headers=user)
    assert again.status == 200, await again.text()
    assert (await again.json())["status"] == "succeeded"


async def test_expired_jobs_leave_the_queue_bound_without_a_worker(
    aiohttp_client, gateway_settings, make_token, redis
):
    """Jobs that waited past their deadline stop counting against the queue, and say expired."""
    settings = dataclasses.replace(gateway_settings, max_queue_depth=2, job_deadline_s=1.0)
    client = await aiohttp_client(create_app(settings))
    user = _auth(make_token("patient"))
    urls = []
    for _ in range(2):
        response = await client.post("/infer?mode=async", json={"prompt": "x"}, headers=user)
        assert response.status == 202
        urls.append(response.headers["Location"])
    assert (
        await client.post("/infer?mode=async", json={"prompt": "x"}, headers=user)
    ).status == 429
    await asyncio.sleep(1.5)
    late = await client.post("/infer?mode=async", json={"prompt": "x"}, headers=user)
    assert late.status == 202, await late.text()
    for url in urls:
        job = await (await client.get(url, headers=user)).json()
        assert job["status"] == "expired"


async def test_a_start_that_dies_fails_fast_and_start_tries_again(
    aiohttp_client, fleet_settings, make_token, redis
):
    """A worker that exits before it is ready: `starting` ends in seconds, /gpu/start retries."""
    dying = LocalFleet(command=[sys.executable, "-c", "import sys; sys.exit(3)"])
    client = await aiohttp_client(create_app(fleet_settings, fleet_backend=dying))
    user, admin = _auth(make_token("u")), _auth(make_token("ops", scopes=ADMIN))
    assert (await client.post("/gpu/start", headers=admin)).status == 202
    await wait_gpu(client, user, "starting", timeout_s=5)
    failed = await wait_gpu(client, user, "stopped", timeout_s=15)
    assert "start" in failed["reason"]
    first_change = failed["changed_at"]
    assert (await client.post("/gpu/start", headers=admin)).status == 202
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        gpu = await _gpu(client, user)
        if gpu["changed_at"] > first_change:
            break
        await asyncio.sleep(0.1)
    assert gpu["changed_at"] > first_change, f"/gpu/start was ignored: {gpu}"


async def test_a_job_of_a_killed_worker_finishes_without_new_traffic(
    aiohttp_client, fleet_settings, local_backend, make_token, redis
):
    """kill -9 of the only worker: with no new request its job resumes and finishes."""
    client = await aiohttp_client(create_app(fleet_settings, fleet_backend=local_backend))
    user, admin = _auth(make_token("alone")), _auth(make_token("ops", scopes=ADMIN))
    await _warm(client, admin, user)
    response = await client.post("/infer?mode=async", json=LONG, headers=user)
    url = response.headers["Location"]
    await _wait_job(client, url, user, {"running"}, timeout_s=30)
    os.kill(local_backend.pid, signal.SIGKILL)
    job = await _wait_job(client, url, user, {"succeeded", "failed"}, timeout_s=90)
    assert job["status"] == "succeeded", job
    assert job["result"]["usage"]["completion_tokens"] > 0


async def test_a_stream_whose_client_leaves_cancels_its_queued_job(
    gateway_settings, make_token, redis
):
    """No worker yet, the job queued: the client closes its stream and the job is cancelled.

    Served as ``python -m services.gateway`` serves it (aiohttp does not cancel a handler
    whose client left; the test client's server would, and hide the bug).
    """
    runner = web.AppRunner(create_app(gateway_settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    user = _auth(make_token("gone"))
    try:
        async with aiohttp.ClientSession(base) as session:
            response = await session.post("/infer?mode=stream", json={"prompt": "x"}, headers=user)
            assert response.status == 200
            url = response.headers["Location"]
            response.close()  # the client goes away while its job still waits in the queue
            job = await _wait_job(session, url, user, {"cancelled"}, timeout_s=10)
        assert job["status"] == "cancelled"
    finally:
        await runner.cleanup()


async def test_start_works_after_a_gateway_died_with_the_fleet_ready(
    aiohttp_client, fleet_settings, local_backend, make_token, redis
):
    """A fleet hash left `ready` by a dead gateway: /gpu/start still brings a worker up."""
    first = await aiohttp_client(create_app(fleet_settings, fleet_backend=local_backend))
    user, admin = _auth(make_token("ops2")), _auth(make_token("ops", scopes=ADMIN))
    await _warm(first, admin, user)
    os.kill(local_backend.pid, signal.SIGKILL)  # the machine went down with its gateway
    await first.close()
    second_backend = LocalFleet(environ=local_backend._environ, drain_timeout_s=5)
    second = await aiohttp_client(create_app(fleet_settings, fleet_backend=second_backend))
    assert (await second.post("/gpu/start", headers=admin)).status == 202
    gpu = await wait_gpu(second, user, "ready", timeout_s=90)
    assert gpu["workers_ready"] == 1
