"""The CloudWatch dashboard: what it shows, and that it reads the names the services publish."""

from __future__ import annotations

import json
import re
from typing import Any

from services.gateway.fleet.backlog import backlog_metrics, fleet_metrics
from services.protocol.telemetry import CLOUDWATCH_METRICS, WORKER_HEARTBEAT
from services.worker.metrics import MinuteSamples
from tests.infra.conftest import Synthesized
from tests.infra.helpers import flatten

SEARCH_NAME = re.compile(r'MetricName="([^"]+)"')


def _widgets(env: Synthesized) -> list[dict[str, Any]]:
    (dashboard,) = env.props("AWS::CloudWatch::Dashboard")
    return json.loads(flatten(dashboard["DashboardBody"]))["widgets"]


def _our_metric_names(env: Synthesized) -> set[str]:
    """TinyLlama-namespace names in metric rows and in SEARCH expressions."""
    names = set()
    for widget in _widgets(env):
        for row in widget["properties"].get("metrics", []):
            if row[0] == "TinyLlama":
                names.add(row[1])
            elif isinstance(row[0], dict) and "SEARCH(" in row[0].get("expression", ""):
                assert "{TinyLlama," in row[0]["expression"]
                names.update(SEARCH_NAME.findall(row[0]["expression"]))
    return names


def _published_names() -> set[str]:
    """Every custom metric name the gateway's and the worker's publishers send."""
    minute = MinuteSamples(ttft_s=[0.1], e2e_s=[0.2], generated_tokens=3)
    minute.count("stop")
    data = [
        *backlog_metrics(env="x", depth=1, oldest_age_s=1.0),
        *fleet_metrics(env="x", state="ready", month_gpu_seconds=1.0, hourly_price_usd=1.0),
        *minute.datums(env="x"),
    ]
    return {d["MetricName"] for d in data} | {WORKER_HEARTBEAT}


def test_dashboard_reads_only_names_the_services_publish(env: Synthesized) -> None:
    """Each custom metric on the dashboard is one the gateway or worker actually sends."""
    used = _our_metric_names(env)
    assert used <= set(CLOUDWATCH_METRICS)
    assert used <= _published_names()
    # Everything published is on the dashboard (the heartbeat as "warm workers").
    assert used == set(CLOUDWATCH_METRICS)


def test_every_declared_cloudwatch_name_is_published() -> None:
    """The single list of CloudWatch names matches what the publishers send, both ways."""
    assert _published_names() == set(CLOUDWATCH_METRICS)


def test_dashboard_shows_what_an_operator_watches(env: Synthesized) -> None:
    """Queue, outcomes, latency percentiles, tokens/s, fleet, GPU hours, cost vs budget, 5xx."""
    widgets = {w["properties"]["title"]: w["properties"] for w in _widgets(env)}
    rows = {title: json.dumps(p.get("metrics", [])) for title, p in widgets.items()}
    assert "QueueDepth" in rows["Queue"]
    ((outcomes,),) = widgets["Jobs by outcome (per minute)"]["metrics"]
    assert SEARCH_NAME.findall(outcomes["expression"]) == ["Jobs"]
    for title in ("Time to first token (s)", "End-to-end latency (s)"):
        assert all(f'"stat": "{p}"' in rows[title] for p in ("p50", "p90", "p99"))
    assert "PERIOD(tokens)" in rows["Tokens generated per second"]
    (fleet,) = [t for t in widgets if t.startswith("Fleet state")]
    assert all(name in rows[fleet] for name in ("FleetState", "GroupInServiceInstances"))
    assert "/ 3600" in rows["GPU hours this month"]
    cost = widgets["Month-to-date GPU cost (USD) vs budget"]
    lines = {a["label"]: a["value"] for a in cost["annotations"]["horizontal"]}
    assert lines["warning"] == env.config.budget_warn_usd
    assert lines["hard stop"] == env.config.budget_hard_stop_usd
    assert "HTTPCode_Target_5XX_Count" in rows["5xx errors"]
    assert ("5xxErrorRate" in rows["5xx errors"]) == (env.config.edge == "cloudfront")
