"""Publishes the queue backlog to CloudWatch, where the worker service's autoscaler reads it.

The names (``services.protocol.telemetry``) are the ones the CDK stack's scaling
policy and alarms use.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from services.gateway.jobs.store import JobStore
from services.protocol.aws import aws_client
from services.protocol.telemetry import (
    CLOUDWATCH_NAMESPACE,
    QUEUE_DEPTH,
    QUEUE_OLDEST_AGE,
    cloudwatch_datum,
)

log = logging.getLogger("tinyllama.gateway.backlog")


def backlog_metrics(*, env: str, depth: int, oldest_age_s: float) -> list[dict[str, Any]]:
    """The CloudWatch datums for one sample."""
    return [
        cloudwatch_datum(name=QUEUE_DEPTH, env=env, value=float(depth), unit="Count"),
        cloudwatch_datum(
            name=QUEUE_OLDEST_AGE, env=env, value=round(oldest_age_s, 3), unit="Seconds"
        ),
    ]


async def publish_backlog(
    jobs: JobStore, *, env: str, period_s: float = 60.0, client: Any = None
) -> None:
    """Forever: one sample a minute to CloudWatch (boto3 in a thread)."""
    if client is None:
        client = aws_client("cloudwatch")
    while True:
        try:
            now = time.time()
            data = backlog_metrics(
                env=env, depth=await jobs.depth(), oldest_age_s=await jobs.oldest_age(now=now)
            )
            await asyncio.to_thread(
                client.put_metric_data, Namespace=CLOUDWATCH_NAMESPACE, MetricData=data
            )
        except Exception as exc:  # a metrics outage must not take the gateway down
            log.warning("backlog publish failed: %s", exc)
        await asyncio.sleep(period_s)
