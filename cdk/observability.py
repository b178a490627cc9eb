"""Observability and cost: alarms to an SNS topic, and a monthly budget."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_budgets as budgets
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from cdk.config import ENV_TAG
from cdk.metrics import DIMENSION, NAMESPACE, QUEUE_DEPTH, QUEUE_OLDEST_AGE, WORKER_HEARTBEAT


@dataclass(frozen=True, kw_only=True)
class ObservabilityProps:
    """Who is told, and at which thresholds."""

    env_name: str
    alarm_emails: tuple[str, ...]
    budget_emails: tuple[str, ...]
    budget_monthly_usd: float
    budget_warn_usd: float
    budget_hard_stop_usd: float
    queue_max_depth: int
    alb_5xx_per_5min: int = 10
    queue_max_age_seconds: int = 300


class Observability(Construct):
    """ALB 5xx, queue backlog/age and worker-heartbeat alarms; a cost budget."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        props: ObservabilityProps,
        load_balancer: elbv2.IApplicationLoadBalancer,
        worker_cluster_name: str,
        worker_service_name: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(
            self, "Alarms", display_name=f"TinyLlama {props.env_name} alarms", enforce_ssl=True
        )
        for email in props.alarm_emails:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))
        notify = cw_actions.SnsAction(self.topic)
        env = {DIMENSION: props.env_name}
        five_min = Duration.minutes(5)

        alb_5xx = cloudwatch.MathExpression(
            expression="FILL(elb, 0) + FILL(target, 0)",
            using_metrics={
                "elb": load_balancer.metrics.http_code_elb(
                    elbv2.HttpCodeElb.ELB_5XX_COUNT, period=five_min
                ),
                "target": load_balancer.metrics.http_code_target(
                    elbv2.HttpCodeTarget.TARGET_5XX_COUNT, period=five_min
                ),
            },
            label="ALB + target 5xx",
            period=five_min,
        )
        self.alb_5xx_alarm = alb_5xx.create_alarm(
            self,
            "Alb5xx",
            threshold=props.alb_5xx_per_5min,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description="The API is answering 5xx",
        )
        self.backlog_alarm = cloudwatch.Metric(
            namespace=NAMESPACE,
            metric_name=QUEUE_DEPTH,
            dimensions_map=env,
            statistic="Maximum",
            period=five_min,
        ).create_alarm(
            self,
            "QueueBacklog",
            threshold=max(1, int(props.queue_max_depth * 0.8)),
            evaluation_periods=2,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description="Queue is at 80% of its bound: clients will see 429",
        )
        self.queue_age_alarm = cloudwatch.Metric(
            namespace=NAMESPACE,
            metric_name=QUEUE_OLDEST_AGE,
            dimensions_map=env,
            statistic="Maximum",
            period=five_min,
        ).create_alarm(
            self,
            "QueueAge",
            threshold=props.queue_max_age_seconds,
            evaluation_periods=2,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description="Jobs wait too long: worker stuck or GPU not starting",
        )

        # A stopped fleet sends no heartbeat by design, so the heartbeat alarm
        # (missing = breaching) only notifies together with "a worker task is
        # running": the composite is "running but silent".
        self.heartbeat_alarm = cloudwatch.Metric(
            namespace=NAMESPACE,
            metric_name=WORKER_HEARTBEAT,
            dimensions_map=env,
            statistic="Sum",
            period=Duration.minutes(1),
        ).create_alarm(
            self,
            "WorkerHeartbeatMissing",
            threshold=1,
            evaluation_periods=5,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
            alarm_description="No worker heartbeat for 5 minutes",
        )
        self.worker_running_alarm = cloudwatch.Metric(
            namespace="ECS/ContainerInsights",
            metric_name="RunningTaskCount",
            dimensions_map={"ClusterName": worker_cluster_name, "ServiceName": worker_service_name},
            statistic="Maximum",
            period=Duration.minutes(1),
        ).create_alarm(
            self,
            "WorkerRunning",
            threshold=1,
            evaluation_periods=5,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description="A GPU worker task has been running for 5 minutes",
        )
        self.worker_silent_alarm = cloudwatch.CompositeAlarm(
            self,
            "WorkerSilent",
            alarm_rule=cloudwatch.AlarmRule.all_of(
                cloudwatch.AlarmRule.from_alarm(self.heartbeat_alarm, cloudwatch.AlarmState.ALARM),
                cloudwatch.AlarmRule.from_alarm(
                    self.worker_running_alarm, cloudwatch.AlarmState.ALARM
                ),
            ),
            alarm_description="A GPU worker runs (and costs) but sends no heartbeat",
        )
        for alarm in (
            self.alb_5xx_alarm,
            self.backlog_alarm,
            self.queue_age_alarm,
            self.worker_silent_alarm,
        ):
            alarm.add_alarm_action(notify)
            alarm.add_ok_action(notify)

        self.budget = self._budget(props)

    def _budget(self, props: ObservabilityProps) -> budgets.CfnBudget:
        """Monthly cost budget for resources tagged with this environment."""

        def notification(
            amount: float, kind: str
        ) -> budgets.CfnBudget.NotificationWithSubscribersProperty:
            return budgets.CfnBudget.NotificationWithSubscribersProperty(
                notification=budgets.CfnBudget.NotificationProperty(
                    comparison_operator="GREATER_THAN",
                    notification_type=kind,
                    threshold=amount,
                    threshold_type="ABSOLUTE_VALUE",
                ),
                subscribers=[
                    budgets.CfnBudget.SubscriberProperty(subscription_type="EMAIL", address=a)
                    for a in props.budget_emails
                ],
            )

        return budgets.CfnBudget(
            self,
            "MonthlyBudget",
            budget=budgets.CfnBudget.BudgetDataProperty(
                budget_name=f"tinyllama-{props.env_name}-monthly",
                budget_type="COST",
                time_unit="MONTHLY",
                budget_limit=budgets.CfnBudget.SpendProperty(
                    amount=props.budget_monthly_usd, unit="USD"
                ),
                # Needs the tag activated as a cost allocation tag (see README).
                cost_filters={"TagKeyValue": [f"user:{ENV_TAG}${props.env_name}"]},
            ),
            notifications_with_subscribers=[
                notification(props.budget_warn_usd, "ACTUAL"),
                notification(props.budget_hard_stop_usd, "ACTUAL"),
                notification(props.budget_monthly_usd, "FORECASTED"),
            ],
        )
