"""Tells the gateway this worker is alive, what it serves and how busy it is."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.protocol.aws import aws_client
from services.protocol.heartbeats import send_heartbeat
from services.protocol.messages import Heartbeat
from services.protocol.telemetry import CLOUDWATCH_NAMESPACE, WORKER_HEARTBEAT, cloudwatch_datum
from services.worker.backends import ServingEngine
from services.worker.engine import measure_rate
from services.worker.leases import Leases
from services.worker.metering import add_gpu_seconds
from services.worker.metrics import WorkerMetrics
from services.worker.outage import Outage
from services.worker.settings import WorkerSettings

log = logging.getLogger("tinyllama.worker.heartbeat")


def context_length(engine: ServingEngine) -> int:
    """The most tokens (prompt plus new ones) one request can hold on this worker.

    The model's context (``max_position_embeddings``), or the KV cache if it is smaller
    (the static engine's ``cache_tokens`` is one slot): the two limits ``check_fits``
    enforces, so the gateway can refuse at the door what this worker would refuse anyway.
    """
    return min(engine.max_context, engine.cache_tokens)


@functools.cache
def max_token_chars(tokenizer: Any) -> int:
    """The longest vocabulary entry, in characters (measured once per tokenizer).

    An entry's spelling is never shorter than the text it stands for: byte-level BPE
    spells each byte as one character, SentencePiece spells a space as one ``▁`` and a
    fallback byte as ``<0xNN>``, special tokens as themselves. So no token covers more
    characters of a prompt than this, and a prompt of ``n`` characters needs at least
    ``n / max_token_chars`` tokens: the bound the gateway checks before queueing.
    """
    return max((len(entry) for entry in tokenizer.get_vocab()), default=1)


def build_heartbeat(
    *, engine: ServingEngine, settings: WorkerSettings, ready: bool, rate: float
) -> Heartbeat:
    """The heartbeat this worker would send now."""
    return Heartbeat(
        worker_id=settings.worker_id,
        model=engine.loaded.name,
        device=engine.loaded.device,
        ready=ready,
        capacity=engine.capacity,
        active_jobs=engine.active,
        tokens_per_s=round(rate, 2),
        sent_at=time.time(),
        demo_model=engine.loaded.is_demo,
        context_length=context_length(engine),
        max_token_chars=max_token_chars(engine.loaded.tokenizer),
    )


async def run_heartbeats(
    redis: Redis,
    *,
    engine: ServingEngine,
    settings: WorkerSettings,
    ready: asyncio.Event,
    leases: Leases,
) -> None:
    """Forever: a heartbeat every ``settings.heartbeat_s``; Redis hiccups are logged, not fatal.

    One warning per outage (not per beat); the GPU time of the outage is metered with the
    first beat that gets through.
    """
    sample = (time.monotonic(), engine.tokens_done)
    metered_at = time.monotonic()
    outage = Outage("heartbeat", logger=log)
    while True:
        rate, sample = measure_rate(engine, since=sample)
        beat = build_heartbeat(
            engine=engine, settings=settings, ready=ready.is_set() and engine.is_alive(), rate=rate
        )
        try:
            await send_heartbeat(redis, beat, ttl_s=settings.heartbeat_ttl_s)
            await leases.renew(redis)
            now = time.monotonic()
            await add_gpu_seconds(redis, now - metered_at, now=time.time())
            if engine.metrics is not None:
                engine.metrics.gpu_seconds.inc(now - metered_at)
                engine.metrics.active.set(engine.active)
                engine.metrics.occupancy.set(engine.active / engine.capacity)
                engine.metrics.tokens_per_s.set(rate)
            metered_at = now
        except (RedisError, OSError) as exc:
            outage.failed(exc)
        else:
            outage.answered()
        await asyncio.sleep(settings.heartbeat_s)


async def publish_heartbeat_metric(
    *,
    env: str,
    ready: asyncio.Event,
    period_s: float = 60.0,
    client: object | None = None,
    metrics: WorkerMetrics | None = None,
) -> None:
    """Forever: WorkerHeartbeat=1 to CloudWatch once a minute while the model is warm.

    The stack's WorkerSilent alarm fires when a worker task runs but this goes quiet.
    With ``metrics``, the minute's jobs go along (outcomes, time to first token,
    end-to-end latency, tokens generated) for the dashboard.
    """
    if client is None:
        client = aws_client("cloudwatch")
    beat = cloudwatch_datum(name=WORKER_HEARTBEAT, env=env, value=1.0, unit="Count")
    while True:
        if ready.is_set():
            data = [beat]
            if metrics is not None:
                data += metrics.drain_minute().datums(env=env)
            try:
                # PutMetricData takes at most 1000 datums per call; a minute has far fewer.
                await asyncio.to_thread(
                    client.put_metric_data, Namespace=CLOUDWATCH_NAMESPACE, MetricData=data
                )
            except Exception as exc:  # an AWS hiccup must not stop the worker
                log.warning("heartbeat metric failed: %s", exc)
        await asyncio.sleep(period_s)
