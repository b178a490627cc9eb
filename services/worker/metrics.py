"""Prometheus metrics of one worker, served on its own port (``TINYLLAMA_METRICS_PORT``)."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, start_http_server

from services.protocol.messages import GenerateResult
from services.protocol.telemetry import WorkerMetricNames, prometheus

log = logging.getLogger("tinyllama.worker.metrics")
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class WorkerMetrics:
    """Names (``services.protocol.telemetry``) follow established inference servers."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        m = WorkerMetricNames
        self.ttft = prometheus(m.TTFT, registry=r, buckets=_LATENCY)
        self.e2e = prometheus(m.E2E_LATENCY, registry=r, buckets=_LATENCY)
        self.queue_time = prometheus(m.QUEUE_TIME, registry=r, buckets=_LATENCY)
        self.prompt_tokens = prometheus(m.PROMPT_TOKENS, registry=r)
        self.generation_tokens = prometheus(m.GENERATION_TOKENS, registry=r)
        self.jobs = prometheus(m.JOBS, registry=r)
        self.active = prometheus(m.RUNNING, registry=r)
        self.occupancy = prometheus(m.BATCH_OCCUPANCY, registry=r)
        self.gpu_seconds = prometheus(m.GPU_SECONDS, registry=r)
        self.tokens_per_s = prometheus(m.TOKENS_PER_S, registry=r)

    def observe_result(self, result: GenerateResult) -> None:
        """Record one finished job."""
        self.e2e.observe(result.timings.total_s)
        self.queue_time.observe(result.timings.queued_s)
        if result.timings.first_token_s is not None:
            self.ttft.observe(result.timings.first_token_s)
        self.prompt_tokens.inc(result.usage.prompt_tokens)
        self.generation_tokens.inc(result.usage.completion_tokens)
        self.jobs.labels(outcome=result.finish_reason).inc()

    def serve(self, port: int, *, host: str = "127.0.0.1") -> bool:
        """Expose ``/metrics`` on ``host:port`` (a daemon thread; 0 = off); False if taken.

        Bound where the gateway binds (loopback locally, every interface in a container),
        never wider; a second stack on one host runs without worker metrics, with a warning.
        """
        if not port:
            return False
        try:
            start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:  # a second worker on one host: serve without metrics
            log.warning("metrics port %s unavailable: %s", port, exc)
            return False
        return True
