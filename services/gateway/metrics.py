"""Prometheus metrics of the gateway: requests, queue, fleet, tokens, GPU time and cost.

Counters that many processes contribute to (tokens, GPU seconds) live in
Redis and are read at scrape time, so every gateway replica reports the same
environment-wide totals.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from services.gateway.fleet import STATES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class GatewayMetrics:
    """One registry per app (tests build many apps in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tinyllama_http_requests_total",
            "HTTP requests by route and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "tinyllama_http_request_duration_seconds",
            "Time to answer an HTTP request (stream: to its end)",
            ["route"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.e2e = Histogram(
            "tinyllama_e2e_request_latency_seconds",
            "Enqueue to result, for jobs whose result the gateway saw",
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
        )
        self.queue_time = Histogram(
            "tinyllama_request_queue_time_seconds",
            "Time a job waited in the queue",
            registry=r,
            buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
        )
        self.ttft = Histogram(
            "tinyllama_time_to_first_token_seconds",
            "Time from a worker taking a job to its first token",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.queue_depth = Gauge("tinyllama_queue_depth", "Jobs queued or running", registry=r)
        self.workers_ready = Gauge(
            "tinyllama_workers_ready", "Workers with a warm model", registry=r
        )
        self.batch_occupancy = Gauge(
            "tinyllama_batch_occupancy",
            "Running sequences / capacity across ready workers",
            registry=r,
        )
        self.fleet_state = Gauge(
            "tinyllama_fleet_state", "1 for the fleet's current state", ["state"], registry=r
        )
        self.prompt_tokens = Gauge(
            "tinyllama_prompt_tokens_total",
            "Prompt tokens processed this month (environment)",
            registry=r,
        )
        self.generation_tokens = Gauge(
            "tinyllama_generation_tokens_total",
            "Tokens generated this month (environment)",
            registry=r,
        )
        self.jobs = Gauge(
            "tinyllama_jobs_total", "Jobs finished this month (environment)", registry=r
        )
        self.gpu_seconds = Gauge(
            "tinyllama_gpu_seconds_total",
            "GPU seconds metered this month (environment)",
            registry=r,
        )
        self.cost = Gauge(
            "tinyllama_estimated_cost_usd", "Month-to-date GPU cost estimate, dollars", registry=r
        )
        self.budget_hard_stop = Gauge(
            "tinyllama_budget_hard_stop_usd",
            "The month's hard-stop threshold (0 = none)",
            registry=r,
        )

    def set_fleet_state(self, state: str) -> None:
        """Mark exactly one state as current."""
        for name in STATES:
            self.fleet_state.labels(state=name).set(1 if name == state else 0)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
