"""Prometheus metrics of one worker, served on its own port (``TINYLLAMA_METRICS_PORT``)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from services.protocol.messages import GenerateResult
from services.protocol.telemetry import (
    E2E_LATENCY,
    GENERATED_TOKENS,
    JOBS,
    TIME_TO_FIRST_TOKEN,
    WorkerMetricNames,
    cloudwatch_datum,
    cloudwatch_values,
    prometheus,
)

log = logging.getLogger("tinyllama.worker.metrics")
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclasses.dataclass
class MinuteSamples:
    """What finished since CloudWatch was last told: per-job values, totals, outcomes."""

    ttft_s: list[float] = dataclasses.field(default_factory=list)
    e2e_s: list[float] = dataclasses.field(default_factory=list)
    generated_tokens: int = 0
    outcomes: dict[str, int] = dataclasses.field(default_factory=dict)

    def count(self, outcome: str) -> None:
        """One more job that ended with ``outcome``."""
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def datums(self, *, env: str) -> list[dict[str, Any]]:
        """The CloudWatch datums for this minute (tokens are sent even when 0)."""
        data = [
            cloudwatch_datum(
                name=GENERATED_TOKENS, env=env, value=float(self.generated_tokens), unit="Count"
            )
        ]
        data += [
            cloudwatch_datum(name=JOBS, env=env, value=float(n), unit="Count", outcome=outcome)
            for outcome, n in sorted(self.outcomes.items())
        ]
        data += cloudwatch_values(name=TIME_TO_FIRST_TOKEN, env=env, values=self.ttft_s)
        data += cloudwatch_values(name=E2E_LATENCY, env=env, values=self.e2e_s)
        return data


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
        self.minute = MinuteSamples()  # drained once a minute into CloudWatch (AWS)

    def observe_result(self, result: GenerateResult) -> None:
        """Record one finished job."""
        self.e2e.observe(result.timings.total_s)
        self.queue_time.observe(result.timings.queued_s)
        if result.timings.first_token_s is not None:
            self.ttft.observe(result.timings.first_token_s)
        self.prompt_tokens.inc(result.usage.prompt_tokens)
        self.generation_tokens.inc(result.usage.completion_tokens)
        self.jobs.labels(outcome=result.finish_reason).inc()
        minute = self.minute
        if result.timings.first_token_s is not None:
            minute.ttft_s.append(result.timings.first_token_s)
        minute.e2e_s.append(result.timings.total_s)
        minute.generated_tokens += result.usage.completion_tokens
        minute.count(result.finish_reason)

    def observe_failure(self, code: str) -> None:
        """Record one job that ended with error ``code``."""
        self.jobs.labels(outcome=code).inc()
        self.minute.count(code)

    def drain_minute(self) -> MinuteSamples:
        """Hand over what was sampled since the last call, and start afresh."""
        minute, self.minute = self.minute, MinuteSamples()
        return minute

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
