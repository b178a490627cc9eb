"""Publishes the gateway's view to CloudWatch once a minute: backlog, fleet state, cost.

The worker service's autoscaler and alarms read the backlog; the dashboard reads
all of it. The names (``services.protocol.telemetry``) are the ones the CDK stack uses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from services.gateway.billing.store import cost_of, gpu_seconds
from services.gateway.fleet.store import FleetStore
from services.gateway.jobs.store import JobStore
from services.protocol.aws import aws_client
from services.protocol.periods import month_label
from services.protocol.telemetry import (
    CLOUDWATCH_NAMESPACE,
    FLEET_STATE,
    FLEET_STATE_CODES,
    MONTH_COST_USD,
    MONTH_GPU_SECONDS,
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


def fleet_metrics(
    *, env: str, state: str, month_gpu_seconds: float, hourly_price_usd: float
) -> list[dict[str, Any]]:
    """The CloudWatch datums for the fleet's state and the month's GPU time and cost."""
    code = FLEET_STATE_CODES.index(state) if state in FLEET_STATE_CODES else 0
    return [
        cloudwatch_datum(name=FLEET_STATE, env=env, value=float(code), unit="None"),
        cloudwatch_datum(
            name=MONTH_GPU_SECONDS, env=env, value=round(month_gpu_seconds, 3), unit="Seconds"
        ),
        cloudwatch_datum(
            name=MONTH_COST_USD,
            env=env,
            value=cost_of(month_gpu_seconds, hourly_price_usd=hourly_price_usd),
            unit="None",
        ),
    ]


async def publish_backlog(
    jobs: JobStore,
    *,
    env: str,
    period_s: float = 60.0,
    client: Any = None,
    fleet: FleetStore | None = None,
    hourly_price_usd: float = 0.0,
) -> None:
    """Forever: one sample a minute to CloudWatch (boto3 in a thread).

    With ``fleet``, the sample also carries the fleet's state and the month's GPU
    seconds and cost (priced at ``hourly_price_usd``).
    """
    if client is None:
        client = aws_client("cloudwatch")
    while True:
        try:
            now = time.time()
            data = backlog_metrics(
                env=env, depth=await jobs.depth(), oldest_age_s=await jobs.oldest_age(now=now)
            )
            if fleet is not None:
                data += fleet_metrics(
                    env=env,
                    state=(await fleet.read()).state,
                    month_gpu_seconds=await gpu_seconds(jobs.redis, period=month_label(now)),
                    hourly_price_usd=hourly_price_usd,
                )
            await asyncio.to_thread(
                client.put_metric_data, Namespace=CLOUDWATCH_NAMESPACE, MetricData=data
            )
        except Exception as exc:  # a metrics outage must not take the gateway down
            log.warning("backlog publish failed: %s", exc)
        await asyncio.sleep(period_s)
