"""The operator's CloudWatch dashboard: queue, jobs, latency, throughput, fleet, cost, errors.

Custom metrics come from the services (names in ``services/protocol/telemetry.py``,
published once a minute with the ``Environment`` dimension); the rest are AWS's
own (ALB, CloudFront, ECS Container Insights, the GPU group's metrics).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from constructs import Construct

from cdk.metrics import (
    DIMENSION,
    E2E_LATENCY,
    FLEET_STATE,
    FLEET_STATE_CODES,
    GENERATED_TOKENS,
    JOBS,
    MONTH_COST_USD,
    MONTH_GPU_SECONDS,
    NAMESPACE,
    OUTCOME_DIMENSION,
    QUEUE_DEPTH,
    QUEUE_OLDEST_AGE,
    TIME_TO_FIRST_TOKEN,
    WORKER_HEARTBEAT,
)

MINUTE = Duration.minutes(1)
PERCENTILES = ("p50", "p90", "p99")
WIDTH = 8  # three widgets a row (the grid is 24 wide)


@dataclass(frozen=True, kw_only=True)
class DashboardProps:
    """Which environment, and the budget lines drawn on the cost graph."""

    env_name: str
    budget_warn_usd: float
    budget_hard_stop_usd: float
    budget_monthly_usd: float


class Dashboard(Construct):
    """One dashboard per environment, named ``TinyLlama-<env>``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        props: DashboardProps,
        load_balancer: elbv2.IApplicationLoadBalancer,
        distribution: cloudfront.IDistribution | None,
        worker_cluster_name: str,
        worker_service_name: str,
        gpu_group_name: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self._env = props.env_name
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"TinyLlama-{props.env_name}",
            default_interval=Duration.hours(3),
        )
        self.dashboard.add_widgets(
            self._graph(
                "Queue",
                [self._metric(QUEUE_DEPTH, "Maximum", "jobs queued or running")],
                right=[self._metric(QUEUE_OLDEST_AGE, "Maximum", "oldest job's wait (s)")],
            ),
            self._graph("Jobs by outcome (per minute)", [self._jobs_by_outcome()]),
            self._graph(
                "Tokens generated per second",
                [
                    _math(
                        "tokens / PERIOD(tokens)", self._metric(GENERATED_TOKENS, "Sum"), "tokens/s"
                    )
                ],
            ),
        )
        self.dashboard.add_widgets(
            self._graph(
                "Time to first token (s)",
                [self._metric(TIME_TO_FIRST_TOKEN, p, p) for p in PERCENTILES],
            ),
            self._graph(
                "End-to-end latency (s)",
                [self._metric(E2E_LATENCY, p, p) for p in PERCENTILES],
            ),
            self._errors(load_balancer, distribution),
        )
        self.dashboard.add_widgets(
            self._fleet(worker_cluster_name, worker_service_name, gpu_group_name),
            self._graph(
                "GPU hours this month",
                [
                    _math(
                        "seconds / 3600",
                        self._metric(MONTH_GPU_SECONDS, "Maximum"),
                        "GPU hours (month to date)",
                    )
                ],
            ),
            self._graph(
                "Month-to-date GPU cost (USD) vs budget",
                [self._metric(MONTH_COST_USD, "Maximum", "estimated GPU cost")],
                annotations=[
                    cloudwatch.HorizontalAnnotation(
                        value=props.budget_warn_usd, label="warning", color="#ff7f0e"
                    ),
                    cloudwatch.HorizontalAnnotation(
                        value=props.budget_hard_stop_usd, label="hard stop", color="#d62728"
                    ),
                    cloudwatch.HorizontalAnnotation(
                        value=props.budget_monthly_usd, label="monthly budget"
                    ),
                ],
            ),
        )

    def _metric(self, name: str, statistic: str, label: str | None = None) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=NAMESPACE,
            metric_name=name,
            dimensions_map={DIMENSION: self._env},
            statistic=statistic,
            period=MINUTE,
            label=label,
        )

    def _jobs_by_outcome(self) -> cloudwatch.MathExpression:
        """One line per outcome that occurred (finish reasons and error codes)."""
        search = (
            f"SEARCH('{{{NAMESPACE},{DIMENSION},{OUTCOME_DIMENSION}}} "
            f'MetricName="{JOBS}" {DIMENSION}="{self._env}"\', \'Sum\', 60)'
        )
        return cloudwatch.MathExpression(expression=search, label="", period=MINUTE)

    def _fleet(self, cluster: str, service: str, group: str) -> cloudwatch.GraphWidget:
        """The controller's state next to what AWS runs: tasks, hosts in service, warm hosts."""
        states = ", ".join(f"{i}={s}" for i, s in enumerate(FLEET_STATE_CODES))
        return self._graph(
            f"Fleet state ({states}) and GPU hosts",
            [
                self._metric(FLEET_STATE, "Maximum", "fleet state"),
                self._metric(WORKER_HEARTBEAT, "Sum", "warm workers (heartbeats)"),
            ],
            right=[
                cloudwatch.Metric(
                    namespace="ECS/ContainerInsights",
                    metric_name="RunningTaskCount",
                    dimensions_map={"ClusterName": cluster, "ServiceName": service},
                    statistic="Maximum",
                    period=MINUTE,
                    label="worker tasks",
                ),
                *(
                    cloudwatch.Metric(
                        namespace="AWS/AutoScaling",
                        metric_name=name,
                        dimensions_map={"AutoScalingGroupName": group},
                        statistic="Maximum",
                        period=MINUTE,
                        label=label,
                    )
                    for name, label in (
                        ("GroupInServiceInstances", "GPU hosts in service (billing)"),
                        ("WarmPoolWarmedCapacity", "stopped hosts in the warm pool"),
                    )
                ),
            ],
        )

    def _errors(
        self,
        load_balancer: elbv2.IApplicationLoadBalancer,
        distribution: cloudfront.IDistribution | None,
    ) -> cloudwatch.GraphWidget:
        """5xx from the ALB itself and from the gateway, and CloudFront's 5xx rate."""
        metrics = load_balancer.metrics
        left: list[cloudwatch.IMetric] = [
            metrics.http_code_elb(elbv2.HttpCodeElb.ELB_5XX_COUNT, period=MINUTE, label="ALB 5xx"),
            metrics.http_code_target(
                elbv2.HttpCodeTarget.TARGET_5XX_COUNT, period=MINUTE, label="gateway 5xx"
            ),
        ]
        right: list[cloudwatch.IMetric] = []
        if distribution is not None:
            right.append(
                cloudwatch.Metric(
                    namespace="AWS/CloudFront",
                    metric_name="5xxErrorRate",
                    dimensions_map={
                        "DistributionId": distribution.distribution_id,
                        "Region": "Global",
                    },
                    statistic="Average",
                    period=MINUTE,
                    region="us-east-1",  # CloudFront publishes its metrics there only
                    label="CloudFront 5xx (%)",
                )
            )
        return self._graph("5xx errors", left, right=right)

    @staticmethod
    def _graph(
        title: str,
        left: list[cloudwatch.IMetric],
        *,
        right: list[cloudwatch.IMetric] | None = None,
        annotations: list[cloudwatch.HorizontalAnnotation] | None = None,
    ) -> cloudwatch.GraphWidget:
        return cloudwatch.GraphWidget(
            title=title,
            left=left,
            right=right or [],
            left_annotations=annotations,
            width=WIDTH,
            height=6,
        )


def _math(expression: str, metric: cloudwatch.Metric, label: str) -> cloudwatch.MathExpression:
    """``expression`` over one metric, which it names by its first word."""
    return cloudwatch.MathExpression(
        expression=expression,
        using_metrics={expression.split()[0]: metric},
        label=label,
        period=MINUTE,
    )
