"""Wires the worker: load the model, start the engine, heartbeat, drain the ARQ queue."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from typing import Any

from arq.connections import RedisSettings, create_pool
from arq.worker import Worker, func
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.protocol import names
from services.protocol.heartbeats import withdraw
from services.protocol.serializer import deserialize_job, serialize_job
from services.worker.backends import ServingEngine, build_engine
from services.worker.heartbeat import publish_heartbeat_metric, run_heartbeats
from services.worker.leases import Leases
from services.worker.loading import load_model
from services.worker.metrics import WorkerMetrics
from services.worker.outage import REDIS_DOWN, Outage, retry_redis
from services.worker.publisher import StreamWriter
from services.worker.runner import MAX_RUNS, run_job
from services.worker.settings import WorkerSettings

log = logging.getLogger("tinyllama.worker")


def redis_settings(url: str) -> RedisSettings:
    """ARQ Redis settings that survive Redis restarts and slow starts."""
    settings = RedisSettings.from_dsn(url)
    settings.conn_retries = 60
    settings.conn_retry_delay = 1
    settings.retry_on_timeout = True
    settings.retry_on_error = [RedisConnectionError, RedisTimeoutError]
    return settings


# Never reached: the job itself ends one that keeps killing workers (``MAX_RUNS``) with an
# event its client sees; ARQ's own "max retries exceeded" would drop it without one.
ARQ_MAX_TRIES = MAX_RUNS + 100


class BatchingWorker(Worker):
    """ARQ's worker, riding out Redis outages, minus a cost that matters at batch sizes.

    ARQ ends its poll loop on the first Redis error, and with it the worker and its warm
    model. Here a poll that fails backs off (0.1 s doubling to 5 s, one warning per
    outage) and the loop goes on; ARQ's bookkeeping at a job's end is retried until Redis
    answers, so no job task fails on a blip.

    ARQ also leaves a running job in the queue until it ends, so every poll (every few
    ms here) re-reads each job this worker already runs and spends four Redis commands
    on it. Jobs this process runs are skipped before that check.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._outage = Outage("queue poll", logger=log)

    async def _poll_iteration(self) -> None:
        """One poll; with Redis away, wait a little longer instead of stopping the worker."""
        try:
            await super()._poll_iteration()
        except REDIS_DOWN as exc:
            await asyncio.sleep(self._outage.failed(exc))
        else:
            self._outage.answered()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """Start the jobs that are not already running here."""
        for job_id in job_ids:
            if self.job_counter >= self.max_jobs:
                return
            if job_id.decode() in self.job_tasks:
                continue
            try:
                await super().start_jobs([job_id])
            except REDIS_DOWN:
                # ARQ took a slot before the call that failed, and only a started job
                # gives it back: give it back here, or each outage shrinks the worker.
                self.job_counter -= 1
                self.sem.release()
                raise

    async def run_job(self, job_id: str, score: int) -> None:
        """ARQ's job run; if Redis fails ARQ's first read, hand the job back for a later poll."""
        try:
            await super().run_job(job_id, score)
        except REDIS_DOWN as exc:
            # The job did not start (its end is retried below, the job itself rides out
            # outages): drop the in-progress mark, which would hold it for the job timeout.
            log.warning("job not started, Redis away: %s", exc, extra={"job_id": job_id})
            key = names.arq_in_progress_key(job_id)
            await retry_redis(
                functools.partial(self.pool.delete, key), what=f"job {job_id}: hand back"
            )

    async def finish_job(self, job_id: str, *args: Any) -> None:
        """ARQ's record of a job's end, retried until Redis answers (it is idempotent)."""
        await retry_redis(
            functools.partial(super().finish_job, job_id, *args), what=f"job {job_id}: ARQ end"
        )

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        """ARQ's record of a job it could not run, retried until Redis answers."""
        await retry_redis(
            functools.partial(super().finish_failed_job, job_id, result_data),
            what=f"job {job_id}: ARQ end",
        )


def build_worker(
    *, settings: WorkerSettings, engine: ServingEngine, leases: Leases, writer: StreamWriter
) -> Worker:
    """An ARQ worker whose ``max_jobs`` is the engine's capacity, polling every few ms."""

    async def generate(ctx: dict[str, Any], *, payload: dict[str, Any]) -> str:
        return await run_job(
            ctx,
            payload,
            engine=engine,
            leases=leases,
            worker_id=settings.worker_id,
            ttl_s=settings.result_ttl_s,
            queue_name=settings.queue_name,
            delivery_timeout_s=settings.delivery_timeout_s,
        )

    return BatchingWorker(
        functions=[
            func(
                generate,
                name=names.JOB_FUNCTION,
                max_tries=ARQ_MAX_TRIES,
                timeout=settings.job_timeout_s,
            )
        ],
        redis_settings=redis_settings(settings.redis_url),
        queue_name=settings.queue_name,
        max_jobs=engine.capacity,
        poll_delay=settings.poll_delay_s,
        job_serializer=serialize_job,
        job_deserializer=deserialize_job,
        allow_abort_jobs=True,
        keep_result=settings.result_ttl_s,
        health_check_interval=10,
        job_completion_wait=max(1, int(settings.drain_timeout_s)),  # SIGTERM drains
        handle_signals=True,
        ctx={"stream_writer": writer},
    )


def _stop_on_signals(task: asyncio.Task[Any] | None) -> None:
    """Until ARQ takes over: SIGINT or SIGTERM during load or warm-up cancels ``serve``."""
    if task is None:
        return
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)


async def serve(settings: WorkerSettings) -> None:
    """Run until a signal stops the ARQ worker; always stop the engine thread on the way out."""
    _stop_on_signals(asyncio.current_task())
    loaded = await asyncio.to_thread(load_model, settings)
    metrics = WorkerMetrics()
    metrics.serve(settings.metrics_port, host=settings.metrics_host)
    engine = build_engine(loaded=loaded, settings=settings, metrics=metrics)
    ready = asyncio.Event()
    leases = Leases(lease_s=settings.lease_s)
    redis = await create_pool(redis_settings(settings.redis_url))
    heart = asyncio.create_task(
        run_heartbeats(redis, engine=engine, settings=settings, ready=ready, leases=leases)
    )
    watchdog: asyncio.Task[None] | None = None
    worker: Worker | None = None
    writer = StreamWriter(redis, delivery_timeout_s=settings.delivery_timeout_s)
    cloudwatch = (
        asyncio.create_task(
            publish_heartbeat_metric(env=settings.env, ready=ready, metrics=metrics)
        )
        if settings.publish_metrics
        else None
    )
    try:
        await engine.start()  # includes the warm-up generation
        watchdog = asyncio.create_task(engine.watch())
        # Built only now: ARQ's signal handlers drain a running worker, but a signal that
        # reaches them before ``async_run`` is swallowed and the worker would never stop.
        worker = build_worker(settings=settings, engine=engine, leases=leases, writer=writer)
        ready.set()
        log.info(
            "worker ready",
            extra={"model": loaded.name, "device": loaded.device, "capacity": engine.capacity},
        )
        with contextlib.suppress(asyncio.CancelledError):
            await worker.async_run()
    finally:
        ready.clear()
        for task in (heart, watchdog, cloudwatch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(Exception):
            await withdraw(redis, worker_id=settings.worker_id)
        if worker is not None:
            with contextlib.suppress(Exception):
                await worker.close()
        await writer.close(timeout_s=5.0)  # tokens of jobs handed back: their re-run resumes
        await engine.stop()
        await redis.aclose()
        log.info("worker stopped")
