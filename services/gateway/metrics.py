"""Prometheus metrics of the gateway: requests, queue, fleet, tokens, GPU time and cost.

Counters that many processes contribute to (tokens, GPU seconds) live in
Redis and are read at scrape time, so every gateway replica reports the same
environment-wide totals.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from services.protocol.fleet import STATES
from services.protocol.telemetry import GatewayMetricNames, prometheus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_HTTP = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_JOB = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
_QUEUE = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300)
_TTFT = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class GatewayMetrics:
    """One registry per app (tests build many apps in one process); names from telemetry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        m = GatewayMetricNames
        self.requests = prometheus(m.HTTP_REQUESTS, registry=r)
        self.latency = prometheus(m.HTTP_DURATION, registry=r, buckets=_HTTP)
        self.e2e = prometheus(m.E2E_LATENCY, registry=r, buckets=_JOB)
        self.queue_time = prometheus(m.QUEUE_TIME, registry=r, buckets=_QUEUE)
        self.ttft = prometheus(m.TTFT, registry=r, buckets=_TTFT)
        self.queue_depth = prometheus(m.QUEUE_DEPTH, registry=r)
        self.workers_ready = prometheus(m.WORKERS_READY, registry=r)
        self.batch_occupancy = prometheus(m.BATCH_OCCUPANCY, registry=r)
        self.fleet_state = prometheus(m.FLEET_STATE, registry=r)
        self.prompt_tokens = prometheus(m.MONTH_PROMPT_TOKENS, registry=r)
        self.generation_tokens = prometheus(m.MONTH_GENERATION_TOKENS, registry=r)
        self.jobs = prometheus(m.MONTH_JOBS, registry=r)
        self.gpu_seconds = prometheus(m.MONTH_GPU_SECONDS, registry=r)
        self.cost = prometheus(m.MONTH_COST_USD, registry=r)
        self.budget_hard_stop = prometheus(m.BUDGET_HARD_STOP_USD, registry=r)
        # Routes are templates and statuses few, so this stays small (bounded cardinality).
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, *, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and its duration (label children cached: hot path)."""
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(route=route, method=method, status=str(status)),
                self.latency.labels(route=route),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def set_fleet_state(self, state: str) -> None:
        """Mark exactly one state as current."""
        for name in STATES:
            self.fleet_state.labels(state=name).set(1 if name == state else 0)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
