"""Worker: the ECS cluster, the GPU capacity provider and the worker service.

The fleet costs nothing at rest: the service's desired count starts at 0,
the Auto Scaling group's minimum is 0, and ECS managed scaling starts an
instance only for a task that needs one. The service scales out when the
gateway's queue-depth metric shows work and back to zero once the queue has
been empty for ``idle_stop_minutes`` (a safety net behind the gateway's own
idle stop: even a dead gateway can't leave a GPU running all night).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from constructs import Construct

from cdk.log_groups import create_log_group
from cdk.metrics import DIMENSION, NAMESPACE, QUEUE_DEPTH
from cdk.nag import acknowledge, acknowledge_task_definition

CONTAINER_NAME = "worker"
WORKER_COMMAND = ["python", "-m", "services.worker"]


@dataclass(frozen=True, kw_only=True)
class WorkerProps:
    """What the worker fleet is made of."""

    env_name: str
    instance_type: str
    max_instances: int
    memory_reservation_mib: int
    idle_stop_minutes: int
    log_retention_days: int
    removal_policy: RemovalPolicy


class Worker(Construct):
    """GPU worker fleet on an EC2 capacity provider that scales to zero."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        props: WorkerProps,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        image: ecs.ContainerImage,
        environment: dict[str, str],
        secrets: dict[str, ecs.Secret],
    ) -> None:
        super().__init__(scope, construct_id)
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=vpc,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )
        self.instance_security_group = ec2.SecurityGroup(
            self,
            "InstanceSecurityGroup",
            vpc=vpc,
            allow_all_outbound=True,
            description="GPU hosts: no ingress; egress for the ECS agent and image pulls",
        )
        self.log_group = create_log_group(
            self, "Logs", days=props.log_retention_days, removal_policy=props.removal_policy
        )
        instance_role = self._instance_role()
        launch_template = ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            machine_image=ecs.EcsOptimizedImage.amazon_linux2023(ecs.AmiHardwareType.GPU),
            instance_type=ec2.InstanceType(props.instance_type),
            security_group=self.instance_security_group,
            # CDK would add ``ecs:Submit*`` to this role; the explicit policy in
            # _instance_role names each action instead.
            role=instance_role.without_policy_updates(),
            user_data=ec2.UserData.for_linux(),
            require_imdsv2=True,
            detailed_monitoring=True,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(
                        100,
                        encrypted=True,
                        volume_type=ec2.EbsDeviceVolumeType.GP3,
                        delete_on_termination=True,
                    ),
                )
            ],
        )
        self.auto_scaling_group = autoscaling.AutoScalingGroup(
            self,
            "GpuHosts",
            vpc=vpc,
            vpc_subnets=subnets,
            launch_template=launch_template,
            min_capacity=0,
            max_capacity=props.max_instances,
        )
        self.capacity_provider = ecs.AsgCapacityProvider(
            self,
            "GpuCapacity",
            auto_scaling_group=self.auto_scaling_group,
            enable_managed_scaling=True,
            enable_managed_termination_protection=True,
            enable_managed_draining=True,
            target_capacity_percent=100,
            machine_image_type=ecs.MachineImageType.AMAZON_LINUX_2,
        )
        self.cluster.add_asg_capacity_provider(self.capacity_provider)
        acknowledge(
            self.auto_scaling_group,
            "AwsSolutions-AS3",
            reason="ECS managed scaling drives this group; fleet start/stop is reported "
            "by the WorkerRunning/WorkerSilent alarms and the gateway, not ASG emails",
        )
        self.task_definition = ecs.Ec2TaskDefinition(
            self, "Task", network_mode=ecs.NetworkMode.AWS_VPC
        )
        self.task_definition.add_container(
            CONTAINER_NAME,
            image=image,
            command=WORKER_COMMAND,
            gpu_count=1,
            memory_reservation_mib=props.memory_reservation_mib,
            environment=environment,
            secrets=secrets,
            logging=ecs.LogDriver.aws_logs(stream_prefix="worker", log_group=self.log_group),
            stop_timeout=Duration.seconds(120),  # SIGTERM lets ARQ re-queue the job
        )
        self.security_group = ec2.SecurityGroup(
            self,
            "TaskSecurityGroup",
            vpc=vpc,
            allow_all_outbound=True,
            description="Worker tasks: no ingress; egress to Redis and AWS endpoints",
        )
        self.service = ecs.Ec2Service(
            self,
            "Service",
            cluster=self.cluster,
            task_definition=self.task_definition,
            desired_count=0,  # a new stack starts with the GPU off
            min_healthy_percent=0,  # one GPU per host: replace in place
            max_healthy_percent=100,
            vpc_subnets=subnets,
            security_groups=[self.security_group],
            capacity_provider_strategies=[
                ecs.CapacityProviderStrategy(
                    capacity_provider=self.capacity_provider.capacity_provider_name, weight=1
                )
            ],
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
        )
        self._add_queue_scaling(props)
        acknowledge_task_definition(self.task_definition)

    def _instance_role(self) -> iam.Role:
        """The GPU hosts' role: what the ECS agent needs, each action named."""
        role = iam.Role(
            self,
            "InstanceRole",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="GPU container instances (ECS agent)",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="RegisterWithCluster",
                actions=[
                    "ecs:DeregisterContainerInstance",
                    "ecs:RegisterContainerInstance",
                    "ecs:SubmitAttachmentStateChanges",
                    "ecs:SubmitContainerStateChange",
                    "ecs:SubmitTaskStateChange",
                    "ecs:UpdateContainerInstancesState",
                ],
                resources=[self.cluster.cluster_arn],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="PollClusterOnly",
                actions=["ecs:Poll", "ecs:StartTelemetrySession"],
                resources=["*"],
                conditions={"ArnEquals": {"ecs:cluster": self.cluster.cluster_arn}},
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="AgentBootstrap",
                actions=["ecs:DiscoverPollEndpoint", "ecr:GetAuthorizationToken"],
                resources=["*"],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="WorkerLogs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            reason="ecs:DiscoverPollEndpoint and ecr:GetAuthorizationToken have no "
            "resource-level permissions; ecs:Poll/StartTelemetrySession are limited "
            "to this cluster by the ecs:cluster condition",
        )
        return role

    def _add_queue_scaling(self, props: WorkerProps) -> None:
        """Scale 0 -> 1..max on queue depth, and back to 0 after an idle period."""
        target = appscaling.ScalableTarget(
            self,
            "TaskCount",
            service_namespace=appscaling.ServiceNamespace.ECS,
            scalable_dimension="ecs:service:DesiredCount",
            resource_id=f"service/{self.cluster.cluster_name}/{self.service.service_name}",
            min_capacity=0,
            max_capacity=props.max_instances,
            role=iam.Role.from_role_arn(
                self,
                "ScalingRole",
                f"arn:{Aws.PARTITION}:iam::{Aws.ACCOUNT_ID}:role/aws-service-role/"
                "ecs.application-autoscaling.amazonaws.com/"
                "AWSServiceRoleForApplicationAutoScaling_ECSService",
            ),
        )
        target.node.add_dependency(self.service)
        depth = cloudwatch.Metric(
            namespace=NAMESPACE,
            metric_name=QUEUE_DEPTH,
            dimensions_map={DIMENSION: props.env_name},
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
            self,
            "ScaleOut",
            scaling_target=target,
            adjustment_type=appscaling.AdjustmentType.EXACT_CAPACITY,
            cooldown=Duration.minutes(1),
            metric_aggregation_type=appscaling.MetricAggregationType.MAXIMUM,
        )
        scale_out.add_adjustment(adjustment=1, lower_bound=0, upper_bound=20)
        scale_out.add_adjustment(adjustment=props.max_instances, lower_bound=20)
        self.scale_out_alarm = cloudwatch.Alarm(
            self,
            "QueueHasWork",
            metric=depth,
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description="Jobs are waiting: start the GPU worker",
        )
        self.scale_out_alarm.add_alarm_action(cw_actions.ApplicationScalingAction(scale_out))

        scale_in = appscaling.StepScalingAction(
            self,
            "ScaleToZero",
            scaling_target=target,
            adjustment_type=appscaling.AdjustmentType.EXACT_CAPACITY,
            cooldown=Duration.minutes(5),
            metric_aggregation_type=appscaling.MetricAggregationType.MAXIMUM,
        )
        scale_in.add_adjustment(adjustment=0, upper_bound=0)
        self.scale_in_alarm = cloudwatch.Alarm(
            self,
            "QueueIdle",
            metric=filled,
            threshold=0,
            evaluation_periods=props.idle_stop_minutes,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
            alarm_description=f"Queue empty for {props.idle_stop_minutes} min: stop the GPU",
        )
        self.scale_in_alarm.add_alarm_action(cw_actions.ApplicationScalingAction(scale_in))

    def grant_fleet_control(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` read and set this worker service's desired count only."""
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["ecs:DescribeServices", "ecs:UpdateService"],
            resource_arns=[self.service.service_arn],
        )
