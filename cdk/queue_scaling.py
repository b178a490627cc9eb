"""The worker service's backstop scaling on the gateway's queue-depth metric.

The gateway's fleet controller starts and stops the GPU fleet directly. These
alarms act when no gateway does: work waiting sets the worker count to 1 (or to
the maximum on a long queue), and an empty or silent queue for the idle period
sets it to 0, so even a dead gateway can't leave a GPU running all night.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from constructs import Construct

from cdk.metrics import DIMENSION, NAMESPACE, QUEUE_DEPTH


def add_queue_scaling(
    scope: Construct,
    *,
    cluster: ecs.ICluster,
    service: ecs.BaseService,
    env_name: str,
    max_tasks: int,
    idle_stop_minutes: int,
) -> tuple[cloudwatch.Alarm, cloudwatch.Alarm]:
    """Scale 0 -> 1..max on queue depth, and back to 0 after an idle period.

    Returns the two alarms (work waiting, queue idle) that drive it.
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
    depth = cloudwatch.Metric(
        namespace=NAMESPACE,
        metric_name=QUEUE_DEPTH,
        dimensions_map={DIMENSION: env_name},
        statistic="Maximum",
        period=Duration.minutes(1),
    )
    # Missing data means nobody is queueing work: count it as an empty queue.
    filled = cloudwatch.MathExpression(
        expression="FILL(depth, 0)",
        using_metrics={"depth": depth},
        label="QueueDepth (missing = 0)",
        period=Duration.minutes(1),
    )

    scale_out = appscaling.StepScalingAction(
        scope,
        "ScaleOut",
        scaling_target=target,
        adjustment_type=appscaling.AdjustmentType.EXACT_CAPACITY,
        cooldown=Duration.minutes(1),
        metric_aggregation_type=appscaling.MetricAggregationType.MAXIMUM,
    )
    scale_out.add_adjustment(adjustment=1, lower_bound=0, upper_bound=20)
    scale_out.add_adjustment(adjustment=max_tasks, lower_bound=20)
    scale_out_alarm = cloudwatch.Alarm(
        scope,
        "QueueHasWork",
        metric=depth,
        threshold=1,
        evaluation_periods=1,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        alarm_description="Jobs are waiting: start the GPU worker",
    )
    scale_out_alarm.add_alarm_action(cw_actions.ApplicationScalingAction(scale_out))

    scale_in = appscaling.StepScalingAction(
        scope,
        "ScaleToZero",
        scaling_target=target,
        adjustment_type=appscaling.AdjustmentType.EXACT_CAPACITY,
        cooldown=Duration.minutes(5),
        metric_aggregation_type=appscaling.MetricAggregationType.MAXIMUM,
    )
    scale_in.add_adjustment(adjustment=0, upper_bound=0)
    scale_in_alarm = cloudwatch.Alarm(
        scope,
        "QueueIdle",
        metric=filled,
        threshold=0,
        evaluation_periods=idle_stop_minutes,
        comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_OR_EQUAL_TO_THRESHOLD,
        treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
        alarm_description=f"Queue empty for {idle_stop_minutes} min: stop the GPU",
    )
    scale_in_alarm.add_alarm_action(cw_actions.ApplicationScalingAction(scale_in))
    return scale_out_alarm, scale_in_alarm
