"""Prometheus metrics of one worker, served on its own port (``TINYLLAMA_METRICS_PORT``)."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from services.protocol.messages import GenerateResult

log = logging.getLogger("tinyllama.worker.metrics")
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class WorkerMetrics:
    """Names follow established inference servers (``*_time_to_first_token_seconds``, ...)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ttft = Histogram(
            "tinyllama_time_to_first_token_seconds",
            "Job start to first generated token",
            buckets=_LATENCY,
            registry=r,
        )
        self.e2e = Histogram(
            "tinyllama_e2e_request_latency_seconds",
            "Enqueue to final result",
            buckets=_LATENCY,
            registry=r,
        )
        self.queue_time = Histogram(
            "tinyllama_request_queue_time_seconds",
            "Time a job waited before a worker took it",
            buckets=_LATENCY,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "tinyllama_prompt_tokens", "Prompt tokens processed", registry=r
        )
        self.generation_tokens = Counter(
            "tinyllama_generation_tokens", "Tokens generated", registry=r
        )
        self.jobs = Counter(
            "tinyllama_jobs",
            "Jobs finished, by finish reason or error code",
            ["outcome"],
            registry=r,
        )
        self.active = Gauge("tinyllama_num_requests_running", "Sequences in the batch", registry=r)
        self.occupancy = Gauge(
            "tinyllama_batch_occupancy", "Running sequences / capacity", registry=r
        )
        self.gpu_seconds = Counter(
            "tinyllama_gpu_seconds", "Seconds this worker held its accelerator", registry=r
        )
        self.tokens_per_s = Gauge(
            "tinyllama_generation_tokens_per_second",
            "Generation rate over the last heartbeat",
            registry=r,
        )

    def observe_result(self, result: GenerateResult) -> None:
        """Record one finished job."""
        self.e2e.observe(result.timings.total_s)
        self.queue_time.observe(result.timings.queued_s)
        if result.timings.first_token_s is not None:
            self.ttft.observe(result.timings.first_token_s)
        self.prompt_tokens.inc(result.usage.prompt_tokens)
        self.generation_tokens.inc(result.usage.completion_tokens)
        self.jobs.labels(outcome=result.finish_reason).inc()

    def serve(self, port: int) -> bool:
        """Expose ``/metrics`` on ``port`` (a daemon thread; 0 = off); False if it is taken."""
        if not port:
            return False
        try:
            start_http_server(port, registry=self.registry)
        except OSError as exc:  # a second worker on one host: serve without metrics
            log.warning("metrics port %s unavailable: %s", port, exc)
            return False
        return True
