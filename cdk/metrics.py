"""Custom CloudWatch metric names shared by the alarms, the scaling policies and the dashboard.

The gateway publishes the queue, fleet and cost metrics and the worker its heartbeat
and the minute's jobs, each once a minute, with the dimension ``Environment=<env>``.
The names are declared once, in ``services/protocol/telemetry.py``, which the
services publish with.
"""

from __future__ import annotations

from services.protocol.telemetry import (
    CLOUDWATCH_DIMENSION as DIMENSION,
)
from services.protocol.telemetry import (
    CLOUDWATCH_METRICS,
    E2E_LATENCY,
    FLEET_STATE,
    FLEET_STATE_CODES,
    GENERATED_TOKENS,
    JOBS,
    MONTH_COST_USD,
    MONTH_GPU_SECONDS,
    OUTCOME_DIMENSION,
    QUEUE_DEPTH,
    QUEUE_OLDEST_AGE,
    TIME_TO_FIRST_TOKEN,
    WORKER_HEARTBEAT,
)
from services.protocol.telemetry import (
    CLOUDWATCH_NAMESPACE as NAMESPACE,
)

__all__ = [
    "CLOUDWATCH_METRICS",
    "DIMENSION",
    "E2E_LATENCY",
    "FLEET_STATE",
    "FLEET_STATE_CODES",
    "GENERATED_TOKENS",
    "JOBS",
    "MONTH_COST_USD",
    "MONTH_GPU_SECONDS",
    "NAMESPACE",
    "OUTCOME_DIMENSION",
    "QUEUE_DEPTH",
    "QUEUE_OLDEST_AGE",
    "TIME_TO_FIRST_TOKEN",
    "WORKER_HEARTBEAT",
]
