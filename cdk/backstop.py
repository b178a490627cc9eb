"""The worker service's backstop: a GPU that no live gateway controls is stopped.

The gateway's fleet controller starts and stops the GPU fleet directly, and it
publishes the fleet's state to CloudWatch once a minute. The only thing an alarm
must add is the case where no gateway runs at all (a broken deploy, a crashed
task set): then nobody would ever stop a GPU that is running. ``GatewaySilent``
fires when the gateway has published no ``FleetState`` for the idle period and
sets the worker count to 0; ECS managed scaling then removes the host.

No alarm starts the fleet, and no alarm reads the queue: such alarms fought the
controller. Step scaling re-runs its action every minute while an alarm stays in
ALARM, so "queue empty" undid an operator's start with an empty queue (and could
kill the PROVISIONING task of a job-triggered start during the metric's lag),
and "queue has work" undid an operator's or the budget's stop. A scale-out alarm
on the queue could never act as a backstop either: the gateway publishes the
depth, so without a gateway it has no data.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from constructs import Construct

from cdk.metrics import DIMENSION, FLEET_STATE, NAMESPACE


def add_silent_gateway_stop(
    scope: Construct,
    *,
    cluster: ecs.ICluster,
    service: ecs.BaseService,
    env_name: str,
    max_tasks: int,
    idle_stop_minutes: int,
) -> cloudwatch.Alarm:
    """Set the worker count to 0 once no gateway has reported for ``idle_stop_minutes``.

    Returns the alarm that drives it.
    """
    target = appscaling.ScalableTarget(
        scope,
        "TaskCount",
        service_namespace=appscaling.ServiceNamespace.ECS,
        scalable_dimension="ecs:service:DesiredCount",
        resource_id=f"service/{cluster.cluster_name}/{service.service_name}",
        min_capacity=0,
        max_capacity=max_tasks,
        role=iam.Role.from_role_arn(
            scope,
            "ScalingRole",
            f"arn:{Aws.PARTITION}:iam::{Aws.ACCOUNT_ID}:role/aws-service-role/"
            "ecs.application-autoscaling.amazonaws.com/"
            "AWSServiceRoleForApplicationAutoScaling_ECSService",
        ),
    )
    target.node.add_dependency(service)
    reports = cloudwatch.Metric(
        namespace=NAMESPACE,
        metric_name=FLEET_STATE,
        dimensions_map={DIMENSION: env_name},
        statistic="SampleCount",
        period=Duration.minutes(1),
    )
    # No sample in a minute means no gateway published one.
    filled = cloudwatch.MathExpression(
        expression="FILL(reports, 0)",
        using_metrics={"reports": reports},
        label="FleetState reports (missing = 0)",
        period=Duration.minutes(1),
    )
    stop = appscaling.StepScalingAction(
        scope,
        "ScaleToZero",
        scaling_target=target,
        adjustment_type=appscaling.AdjustmentType.EXACT_CAPACITY,
        cooldown=Duration.minutes(5),
        metric_aggregation_type=appscaling.MetricAggregationType.MAXIMUM,
    )
    stop.add_adjustment(adjustment=0, upper_bound=0)
    alarm = cloudwatch.Alarm(
        scope,
        "GatewaySilent",
        metric=filled,
        threshold=0,
        evaluation_periods=idle_stop_minutes,
        comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_OR_EQUAL_TO_THRESHOLD,
        treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
        alarm_description=(
            f"No gateway has reported the fleet's state for {idle_stop_minutes} min: "
            "stop the GPU worker, which nobody controls"
        ),
    )
    alarm.add_alarm_action(cw_actions.ApplicationScalingAction(stop))
    return alarm
