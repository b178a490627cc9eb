"""A job that keeps killing its workers is run twice, then failed: the fleet stops dying for it."""

from __future__ import annotations

import signal

import pytest

from services.protocol.messages import DoneEvent, ErrorEvent, StatusEvent
from tests.worker.jobs import enqueue, final_event, stream_events, wait_running

pytestmark = pytest.mark.slow

FAST = {"TINYLLAMA_LEASE": "2"}  # a killed worker's job is picked up again within 2 s


async def test_a_job_that_crashed_two_workers_ends_worker_crashed_on_its_third_pickup(
    redis_client, start_worker
):
    """Third pickup after two kill -9s: not run, ends worker_crashed; that worker serves on."""
    job_id = await enqueue(redis_client, prompt="llama llama", max_new_tokens=2000)
    killed = []
    for _ in range(2):
        worker = start_worker(**FAST)
        await worker.ready(redis_client)
        await wait_running(redis_client, job_id, worker_id=worker.worker_id, tokens=10)
        worker.signal(signal.SIGKILL)
        worker.process.wait()
        killed.append(worker.worker_id)
    third = start_worker(**FAST)
    await third.ready(redis_client)
    final = await final_event(redis_client, job_id, timeout_s=20)
    assert isinstance(final, ErrorEvent), final
    assert (final.code, final.status) == ("worker_crashed", "failed")
    events = await stream_events(redis_client, job_id)
    assert events[-1] == final  # a streaming client gets it as its `error` event
    runs = [e.worker for e in events if isinstance(e, StatusEvent) and e.status == "running"]
    assert runs == killed  # the third pickup did not run it
    next_job = await enqueue(redis_client, max_new_tokens=8)
    assert isinstance(await final_event(redis_client, next_job, timeout_s=20), DoneEvent)
    assert third.process.poll() is None
