"""Publishes the queue backlog to CloudWatch, where the worker service's autoscaler reads it.

Namespace ``TinyLlama``, dimension ``Environment``: the names the CDK stack's
scaling policy and alarms use (cdk/metrics.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.asyncio import Redis

from services.gateway.settings import GatewaySettings

log = logging.getLogger("tinyllama.gateway.backlog")
NAMESPACE = "TinyLlama"


def backlog_metrics(*, env: str, depth: int, oldest_age_s: float) -> list[dict[str, Any]]:
    """The CloudWatch datums for one sample."""
    dims = [{"Name": "Environment", "Value": env}]
    return [
        {"MetricName": "QueueDepth", "Dimensions": dims, "Value": float(depth), "Unit": "Count"},
        {
            "MetricName": "QueueOldestJobAgeSeconds",
            "Dimensions": dims,
            "Value": round(oldest_age_s, 3),
            "Unit": "Seconds",
        },
    ]


async def sample(redis: Redis, *, queue_name: str) -> tuple[int, float]:
    """Queue depth and the age of its oldest job."""
    depth = int(await redis.zcard(queue_name))
    oldest = await redis.zrange(queue_name, 0, 0, withscores=True)
    age = max(0.0, time.time() - oldest[0][1] / 1000.0) if oldest else 0.0
    return depth, age


async def publish_backlog(
    redis: Redis, *, settings: GatewaySettings, period_s: float = 60.0, client: Any = None
) -> None:
    """Forever: one sample a minute to CloudWatch (boto3 in a thread)."""
    if client is None:
        import boto3

        client = boto3.client("cloudwatch")
    while True:
        try:
            depth, age = await sample(redis, queue_name=settings.queue_name)
            data = backlog_metrics(env=settings.env, depth=depth, oldest_age_s=age)
            await asyncio.to_thread(client.put_metric_data, Namespace=NAMESPACE, MetricData=data)
        except Exception as exc:  # a metrics outage must not take the gateway down
            log.warning("backlog publish failed: %s", exc)
        await asyncio.sleep(period_s)
