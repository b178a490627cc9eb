"""The ARQ worker as built here, in process, against a private Redis that goes away."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from arq.connections import create_pool
from arq.worker import func

from services.protocol import names
from services.protocol.serializer import deserialize_job
from services.worker.main import BatchingWorker, redis_settings
from services.worker.outage import REDIS_DOWN
from tests.worker.jobs import enqueue


async def test_a_poll_that_fails_midway_gives_its_job_slot_back(redis_server):
    """Redis gone while a job is taken: the slot ARQ counted comes back, later jobs still start."""
    ran: list[str] = []

    async def generate(ctx: dict[str, Any], *, payload: dict[str, Any]) -> str:
        ran.append(ctx["job_id"])
        return "ok"

    pool = await create_pool(redis_settings(redis_server.url))
    worker = BatchingWorker(
        functions=[func(generate, name=names.JOB_FUNCTION)],
        redis_pool=pool,
        queue_name=names.QUEUE_NAME,
        max_jobs=2,
        handle_signals=False,
        job_deserializer=deserialize_job,
    )
    redis_server.kill()
    for _ in range(5):  # more failures than the worker has slots
        with pytest.raises(REDIS_DOWN):
            await asyncio.wait_for(worker.start_jobs([b"gone"]), timeout=5)
    redis_server.start()
    job_id = await enqueue(pool)
    await asyncio.wait_for(worker.start_jobs([job_id.encode()]), timeout=5)
    await asyncio.wait_for(asyncio.gather(*worker.tasks.values()), timeout=5)
    assert ran == [job_id]
    assert worker.job_counter == 0
    await pool.aclose()
