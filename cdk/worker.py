"""Worker: the ECS cluster, the GPU hosts with their warm pool, and the worker service.

At rest no GPU runs: the service's desired count is 0, the Auto Scaling group's
desired capacity is 0, and the group keeps *stopped* hosts in a warm pool, each
with the worker image pulled and the model on its volume (``cdk/gpu_host.py``);
a stopped host bills only its EBS volume. The gateway's fleet backend starts by
setting both desired counts (a host leaves the pool and boots; ECS places the
task when its agent registers) and stops by draining the service, then setting
the group back to 0 (the host is terminated, and the pool prepares a stopped
replacement in the background). No managed-scaling cool-down sits on either path.

ECS managed scaling stays on as a backstop: the queue-depth alarm sets the
service's count (a task waits in PROVISIONING until a host registers) and an
empty queue for ``idle_stop_minutes`` sets it to 0, so even a dead gateway can't
leave a GPU running all night. Managed termination protection is off: it would
hold a drained host until managed scaling's own, slower scale-in.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from constructs import Construct

from cdk.backstop import add_silent_gateway_stop
from cdk.config import ENV_TAG
from cdk.gpu_host import (
    CONTAINER_CACHE_DIR,
    HOST_CACHE_DIR,
    LIFECYCLE_HOOK_NAME,
    add_host_setup,
)
from cdk.log_groups import create_log_group
from cdk.nag import acknowledge, acknowledge_task_definition, rendered

CONTAINER_NAME = "worker"
WORKER_COMMAND = ["python", "-m", "services.worker"]
# The static engine's 32 slots (TINYLLAMA_MAX_BATCH) each hold TinyLlama's whole 2048-token
# context: 65536 tokens of bf16 KV cache, 1.5 GB of the GPU's 24 GB.
GPU_WORKER_ENVIRONMENT = {"TINYLLAMA_CACHE_TOKENS": "65536"}
MODEL_CACHE_VOLUME = "model-cache"
GPU_VOLUME_THROUGHPUT_MIBPS = 250  # about $5 a month per host above gp3's free 125 MiB/s
# Long enough to pull a multi-GB image and fetch the model while warming; a host
# that never completes its action is kept (CONTINUE): slower, but it still serves.
PREPARE_TIMEOUT = Duration.minutes(30)


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
    model_id: str
    # Return a host to the warm pool on scale-in (stopped, prepared) rather than
    # terminating it and preparing a fresh one. See cdk/README.md for the ECS caveat.
    reuse_on_scale_in: bool = True


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
        image: ecr_assets.DockerImageAsset,
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
        # The GPU hosts' role. Grant to this, never to ``auto_scaling_group.role``: that is
        # the launch template's policy-less view of it, which drops what is added to it.
        self.instance_role = instance_role = self._instance_role()
        image.repository.grant_pull(instance_role)  # the host pulls it while warming
        user_data = ec2.UserData.for_linux()
        add_host_setup(
            user_data,
            worker_image=image.image_uri,
            model_id=props.model_id,
            env_name=props.env_name,
            region=Aws.REGION,
        )
        launch_template = ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            machine_image=ecs.EcsOptimizedImage.amazon_linux2023(ecs.AmiHardwareType.GPU),
            instance_type=ec2.InstanceType(props.instance_type),
            security_group=self.instance_security_group,
            # CDK would add ``ecs:Submit*`` to this role; the explicit policy in
            # _instance_role names each action instead.
            role=instance_role.without_policy_updates(),
            user_data=user_data,
            require_imdsv2=True,
            detailed_monitoring=True,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(
                        100,
                        encrypted=True,
                        volume_type=ec2.EbsDeviceVolumeType.GP3,
                        # The model is read from this volume at every start: 250 MiB/s
                        # (gp3's baseline is 125) loads TinyLlama's 2.2 GB in about 9 s.
                        throughput=GPU_VOLUME_THROUGHPUT_MIBPS,
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
            # Hosts in service and warm-pool sizes for the dashboard (1-minute, no charge).
            group_metrics=[autoscaling.GroupMetrics.all()],
        )
        # Stopped hosts, as many as the group may still start (max - desired). A host
        # that is scaled in is terminated and the pool prepares a fresh one: Amazon ECS
        # does not support returning instances to the pool (ReuseOnScaleIn).
        self.warm_pool = self.auto_scaling_group.add_warm_pool(
            min_size=0,
            pool_state=autoscaling.PoolState.STOPPED,
            reuse_on_scale_in=False,
        )
        # Holds each host until its lifecycle script says it is prepared (entering the
        # pool) or booted (leaving it); the script answers within seconds of each move.
        self.prepare_hook = self.auto_scaling_group.add_lifecycle_hook(
            "Prepare",
            lifecycle_hook_name=LIFECYCLE_HOOK_NAME,
            lifecycle_transition=autoscaling.LifecycleTransition.INSTANCE_LAUNCHING,
            heartbeat_timeout=PREPARE_TIMEOUT,
            default_result=autoscaling.DefaultResult.CONTINUE,
        )
        # CloudFormation would otherwise create the pool and the hook side by side: hosts
        # the pool launches before the hook exists are stopped unprepared (a cold first start).
        self.warm_pool.node.add_dependency(self.prepare_hook)
        self._allow_lifecycle_actions(instance_role)
        self.capacity_provider = ecs.AsgCapacityProvider(
            self,
            "GpuCapacity",
            auto_scaling_group=self.auto_scaling_group,
            enable_managed_scaling=True,
            # Protection would keep a drained host running until managed scaling's own
            # scale-in; managed draining only empties a host the backend already drained.
            enable_managed_termination_protection=False,
            enable_managed_draining=True,
            target_capacity_percent=100,
            machine_image_type=ecs.MachineImageType.AMAZON_LINUX_2,
        )
        self.cluster.add_asg_capacity_provider(self.capacity_provider)
        acknowledge(
            self.auto_scaling_group,
            "AwsSolutions-AS3",
            reason="the gateway's fleet backend and ECS managed scaling drive this group; "
            "fleet start/stop is reported by the WorkerRunning/WorkerSilent alarms and the "
            "dashboard, not ASG emails",
        )
        self.task_definition = ecs.Ec2TaskDefinition(
            self, "Task", network_mode=ecs.NetworkMode.AWS_VPC
        )
        # The host folder the lifecycle script prefetched the model into.
        self.task_definition.add_volume(
            name=MODEL_CACHE_VOLUME, host=ecs.Host(source_path=HOST_CACHE_DIR)
        )
        container = self.task_definition.add_container(
            CONTAINER_NAME,
            image=ecs.ContainerImage.from_docker_image_asset(image),
            command=WORKER_COMMAND,
            gpu_count=1,
            memory_reservation_mib=props.memory_reservation_mib,
            environment={**environment, **GPU_WORKER_ENVIRONMENT},
            secrets=secrets,
            logging=ecs.LogDriver.aws_logs(stream_prefix="worker", log_group=self.log_group),
            stop_timeout=Duration.seconds(120),  # SIGTERM lets ARQ re-queue the job
        )
        container.add_mount_points(
            ecs.MountPoint(
                container_path=CONTAINER_CACHE_DIR,
                source_volume=MODEL_CACHE_VOLUME,
                read_only=False,
            )
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
        self.gateway_silent_alarm = add_silent_gateway_stop(
            self,
            cluster=self.cluster,
            service=self.service,
            env_name=props.env_name,
            max_tasks=props.max_instances,
            idle_stop_minutes=props.idle_stop_minutes,
        )
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

    def _allow_lifecycle_actions(self, instance_role: iam.Role) -> None:
        """Hosts may complete lifecycle actions of their own group only.

        A separate policy: the group must exist to be named, and the launch
        template (which the group needs) already carries the role.
        """
        group_arn = self.auto_scaling_group.auto_scaling_group_arn
        policy = iam.Policy(
            self,
            "LifecyclePolicy",
            statements=[
                iam.PolicyStatement(
                    sid="CompleteOwnLifecycleActions",
                    actions=["autoscaling:CompleteLifecycleAction"],
                    resources=[group_arn],
                ),
                iam.PolicyStatement(
                    sid="FindOwnGroup",
                    actions=["autoscaling:DescribeAutoScalingInstances"],
                    resources=["*"],  # Describe* has no resource-level permissions
                ),
            ],
        )
        policy.attach_to_role(instance_role)
        acknowledge(
            policy,
            f"AwsSolutions-IAM5[Resource::{rendered(self, group_arn)}]",
            reason="the group ARN's id part is unknown before creation; the name pins it",
        )
        acknowledge(
            policy,
            "AwsSolutions-IAM5[Resource::*]",
            reason="autoscaling:DescribeAutoScalingInstances has no resource-level "
            "permissions; the host only looks up its own group name",
        )

    def grant_fleet_control(self, grantee: iam.IGrantable, *, env_name: str) -> None:
        """Let ``grantee`` start and stop this fleet, and nothing else.

        The worker service's desired count; the GPU group's desired capacity (its
        ARN, and its environment tag, both pinned); describing the group, which
        AWS allows only on every group.
        """
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["ecs:DescribeServices", "ecs:UpdateService"],
            resource_arns=[self.service.service_arn],
        )
        group_arn = self.auto_scaling_group.auto_scaling_group_arn
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                sid="StartStopGpuHosts",
                actions=["autoscaling:SetDesiredCapacity"],
                resources=[group_arn],
                conditions={"StringEquals": {f"autoscaling:ResourceTag/{ENV_TAG}": env_name}},
            )
        )
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ReadGpuHosts",
                actions=["autoscaling:DescribeAutoScalingGroups"],
                resources=["*"],  # Describe* has no resource-level permissions
            )
        )
        acknowledge(
            grantee.grant_principal,  # type: ignore[arg-type]
            f"AwsSolutions-IAM5[Resource::{rendered(self, group_arn)}]",
            reason="the group ARN's id part is unknown before creation; its name and "
            "environment tag pin the one GPU group",
        )
