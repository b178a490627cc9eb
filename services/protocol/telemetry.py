"""Every metric name the services export, declared and documented once.

Prometheus: each service's names carry its own prefix (``tinyllama_gateway_``,
``tinyllama_worker_``), so one Prometheus scraping both never merges a gateway's
month-to-date gauge with a worker's lifetime counter. Counters are declared
without ``_total``; the client library appends it on export.

CloudWatch: the custom metrics the stack's alarms and scaling policies read
(``cdk/`` imports these names too).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from services.protocol.names import FLEET_STATES

Kind = Literal["counter", "gauge", "histogram"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Metric:
    """One Prometheus metric: its exported name, kind, help text and label names."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()


GATEWAY_PREFIX = "tinyllama_gateway_"
WORKER_PREFIX = "tinyllama_worker_"


def _gateway(name: str, kind: Kind, help: str, labels: tuple[str, ...] = ()) -> Metric:
    return Metric(name=GATEWAY_PREFIX + name, kind=kind, help=help, labels=labels)


def _worker(name: str, kind: Kind, help: str, labels: tuple[str, ...] = ()) -> Metric:
    return Metric(name=WORKER_PREFIX + name, kind=kind, help=help, labels=labels)


class GatewayMetricNames:
    """What one gateway process exports on ``/metrics``; environment totals come from Redis."""

    HTTP_REQUESTS = _gateway(
        "http_requests",
        "counter",
        "HTTP requests by route and status",
        ("route", "method", "status"),
    )
    HTTP_DURATION = _gateway(
        "http_request_duration_seconds",
        "histogram",
        "Time to answer an HTTP request (a stream: to its end)",
        ("route",),
    )
    E2E_LATENCY = _gateway(
        "e2e_request_latency_seconds", "histogram", "Enqueue to result, for results it relayed"
    )
    QUEUE_TIME = _gateway(
        "request_queue_time_seconds", "histogram", "Time a relayed job waited in the queue"
    )
    TTFT = _gateway(
        "time_to_first_token_seconds",
        "histogram",
        "Worker start to first token, for results it relayed",
    )
    QUEUE_DEPTH = _gateway("queue_depth", "gauge", "Live jobs in the queue (queued or running)")
    WORKERS_READY = _gateway("workers_ready", "gauge", "Workers with a warm model")
    BATCH_OCCUPANCY = _gateway(
        "batch_occupancy", "gauge", "Running sequences / capacity across ready workers"
    )
    FLEET_STATE = _gateway("fleet_state", "gauge", "1 for the fleet's current state", ("state",))
    MONTH_PROMPT_TOKENS = _gateway(
        "month_prompt_tokens", "gauge", "Prompt tokens processed this month (environment)"
    )
    MONTH_GENERATION_TOKENS = _gateway(
        "month_generation_tokens", "gauge", "Tokens generated this month (environment)"
    )
    MONTH_JOBS = _gateway("month_jobs", "gauge", "Jobs finished this month (environment)")
    MONTH_GPU_SECONDS = _gateway(
        "month_gpu_seconds", "gauge", "GPU seconds metered this month (environment)"
    )
    MONTH_COST_USD = _gateway(
        "month_estimated_cost_usd", "gauge", "Month-to-date GPU cost estimate, dollars"
    )
    BUDGET_HARD_STOP_USD = _gateway(
        "budget_hard_stop_usd", "gauge", "The month's hard-stop threshold (0 = none)"
    )


class WorkerMetricNames:
    """What one worker process exports on its own port, counted since it started."""

    TTFT = _worker("time_to_first_token_seconds", "histogram", "Job start to first token")
    E2E_LATENCY = _worker("e2e_request_latency_seconds", "histogram", "Enqueue to final result")
    QUEUE_TIME = _worker(
        "request_queue_time_seconds", "histogram", "Time a job waited before a worker took it"
    )
    PROMPT_TOKENS = _worker("prompt_tokens", "counter", "Prompt tokens processed")
    GENERATION_TOKENS = _worker("generation_tokens", "counter", "Tokens generated")
    JOBS = _worker("jobs", "counter", "Jobs finished, by finish reason or error code", ("outcome",))
    RUNNING = _worker("num_requests_running", "gauge", "Sequences in the batch")
    BATCH_OCCUPANCY = _worker("batch_occupancy", "gauge", "Running sequences / capacity")
    GPU_SECONDS = _worker("gpu_seconds", "counter", "Seconds this worker held its accelerator")
    TOKENS_PER_S = _worker(
        "generation_tokens_per_second", "gauge", "Generation rate over the last heartbeat"
    )


# CloudWatch: namespace, dimension and the custom metrics, published once a minute
# (the stack's alarms, scaling policies and dashboard read these names).
CLOUDWATCH_NAMESPACE = "TinyLlama"
CLOUDWATCH_DIMENSION = "Environment"
OUTCOME_DIMENSION = "Outcome"  # JOBS only: a finish reason (stop, length) or an error code
QUEUE_DEPTH = "QueueDepth"  # gateway: live jobs queued or running (Maximum per minute)
QUEUE_OLDEST_AGE = "QueueOldestJobAgeSeconds"  # gateway: age of the oldest queued job
FLEET_STATE = "FleetState"  # gateway: the fleet's state as its index in FLEET_STATE_CODES
MONTH_GPU_SECONDS = "MonthGpuSeconds"  # gateway: GPU seconds metered this month (environment)
MONTH_COST_USD = "MonthToDateCostUsd"  # gateway: month-to-date GPU cost estimate, dollars
WORKER_HEARTBEAT = "WorkerHeartbeat"  # worker: 1 per warm worker per minute
JOBS = "Jobs"  # worker: jobs finished in the minute, by OUTCOME_DIMENSION
TIME_TO_FIRST_TOKEN = "TimeToFirstTokenSeconds"  # worker: one value per job (percentiles)
E2E_LATENCY = "EndToEndLatencySeconds"  # worker: enqueue to final result, one value per job
GENERATED_TOKENS = "GeneratedTokens"  # worker: tokens generated in the minute (Sum)

FLEET_STATE_CODES = FLEET_STATES  # FleetState's value is the state's index here

CLOUDWATCH_METRICS: tuple[str, ...] = (
    QUEUE_DEPTH,
    QUEUE_OLDEST_AGE,
    FLEET_STATE,
    MONTH_GPU_SECONDS,
    MONTH_COST_USD,
    WORKER_HEARTBEAT,
    JOBS,
    TIME_TO_FIRST_TOKEN,
    E2E_LATENCY,
    GENERATED_TOKENS,
)


def prometheus(metric: Metric, *, registry: Any, buckets: tuple[float, ...] | None = None) -> Any:
    """The prometheus_client collector for ``metric``, registered in ``registry``."""
    import prometheus_client

    kind = {"counter": prometheus_client.Counter, "gauge": prometheus_client.Gauge}.get(metric.kind)
    if kind is not None:
        return kind(metric.name, metric.help, metric.labels, registry=registry)
    extra = {"buckets": buckets} if buckets else {}
    return prometheus_client.Histogram(
        metric.name, metric.help, metric.labels, registry=registry, **extra
    )


def cloudwatch_datum(
    *, name: str, env: str, value: float, unit: str, outcome: str | None = None
) -> dict[str, object]:
    """One ``put_metric_data`` datum with the environment dimension the stack reads."""
    dimensions = [{"Name": CLOUDWATCH_DIMENSION, "Value": env}]
    if outcome is not None:
        dimensions.append({"Name": OUTCOME_DIMENSION, "Value": outcome})
    return {"MetricName": name, "Dimensions": dimensions, "Value": value, "Unit": unit}


def cloudwatch_values(*, name: str, env: str, values: list[float]) -> list[dict[str, object]]:
    """Raw per-job seconds as ``Values``/``Counts`` datums, so CloudWatch has percentiles.

    Values are rounded (10 ms under 1 s, 100 ms under 10 s, 1 s above) so a busy minute
    fits the 150 distinct values one datum may carry; more are split across datums.
    """
    counts: dict[float, int] = {}
    for value in values:
        step = 0.01 if value < 1 else 0.1 if value < 10 else 1.0
        key = round(round(value / step) * step, 2)
        counts[key] = counts.get(key, 0) + 1
    items = sorted(counts.items())
    return [
        {
            "MetricName": name,
            "Dimensions": [{"Name": CLOUDWATCH_DIMENSION, "Value": env}],
            "Values": [v for v, _ in items[i : i + 150]],
            "Counts": [float(c) for _, c in items[i : i + 150]],
            "Unit": "Seconds",
        }
        for i in range(0, len(items), 150)
    ]
