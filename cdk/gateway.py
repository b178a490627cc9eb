"""Gateway: the aiohttp service on Fargate behind an internet-facing ALB."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk.log_groups import create_log_group
from cdk.nag import acknowledge, acknowledge_task_definition

CONTAINER_NAME = "gateway"
CONTAINER_PORT = 8080
GATEWAY_COMMAND = ["python", "-m", "services.gateway"]
HEALTH_CHECK_PATH = "/health"
# Unauthenticated, and meant for scrapers inside the VPC (task IP): the public ALB
# answers these paths itself, ahead of every other rule, and never forwards them.
INTERNAL_PATHS = ["/metrics", "/metrics/*"]
INTERNAL_PATHS_PRIORITY = 1


@dataclass(frozen=True, kw_only=True)
class GatewayProps:
    """Size, scaling and edge settings of the gateway."""

    certificate_arn: str | None  # an existing ACM certificate for the HTTPS listener
    domain_name: str | None = None  # no ARN: request a DNS-validated certificate for this name
    cpu: int
    memory_mib: int
    min_tasks: int
    max_tasks: int
    cpu_target_percent: int
    requests_per_target: int
    idle_timeout_seconds: int
    deregistration_delay_seconds: int
    log_retention_days: int
    removal_policy: RemovalPolicy


class Gateway(Construct):
    """Fargate service in private subnets; only the ALB can reach its port."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        props: GatewayProps,
        cluster: ecs.ICluster,
        vpc: ec2.IVpc,
        public_subnets: ec2.SubnetSelection,
        private_subnets: ec2.SubnetSelection,
        image: ecs.ContainerImage,
        environment: dict[str, str],
        secrets: dict[str, ecs.Secret],
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = create_log_group(
            self, "Logs", days=props.log_retention_days, removal_policy=props.removal_policy
        )
        self.task_definition = ecs.FargateTaskDefinition(
            self,
            "Task",
            cpu=props.cpu,
            memory_limit_mib=props.memory_mib,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.X86_64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        self.task_definition.add_container(
            CONTAINER_NAME,
            image=image,
            command=GATEWAY_COMMAND,
            port_mappings=[ecs.PortMapping(container_port=CONTAINER_PORT)],
            environment=environment,
            secrets=secrets,
            logging=ecs.LogDriver.aws_logs(stream_prefix="gateway", log_group=self.log_group),
            stop_timeout=Duration.seconds(90),  # lets open SSE streams finish
        )
        self.security_group = ec2.SecurityGroup(
            self,
            "TaskSecurityGroup",
            vpc=vpc,
            allow_all_outbound=True,
            description="Gateway tasks: ingress only from the ALB",
        )
        self.service = ecs.FargateService(
            self,
            "Service",
            cluster=cluster,
            task_definition=self.task_definition,
            desired_count=props.min_tasks,
            min_healthy_percent=100,
            max_healthy_percent=200,
            vpc_subnets=private_subnets,
            assign_public_ip=False,
            security_groups=[self.security_group],
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            health_check_grace_period=Duration.seconds(60),
        )

        self.alb_security_group = ec2.SecurityGroup(
            self,
            "AlbSecurityGroup",
            vpc=vpc,
            allow_all_outbound=False,
            description="Public ALB: HTTPS (and HTTP to redirect) from the internet",
        )
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,  # ALB log delivery needs SSE-S3
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(90))],
            removal_policy=RemovalPolicy.RETAIN,  # never lose the audit trail on delete
        )
        self.load_balancer = elbv2.ApplicationLoadBalancer(
            self,
            "Alb",
            vpc=vpc,
            vpc_subnets=public_subnets,
            internet_facing=True,
            security_group=self.alb_security_group,
            idle_timeout=Duration.seconds(props.idle_timeout_seconds),
            drop_invalid_header_fields=True,
            deletion_protection=props.removal_policy == RemovalPolicy.RETAIN,
        )
        self.load_balancer.log_access_logs(self.access_logs, prefix="alb")

        certificate = None
        if props.certificate_arn is not None:
            certificate = elbv2.ListenerCertificate.from_arn(props.certificate_arn)
        elif props.domain_name is not None:
            requested = acm.Certificate(
                self,
                "Certificate",
                domain_name=props.domain_name,
                validation=acm.CertificateValidation.from_dns(),
            )
            certificate = elbv2.ListenerCertificate.from_certificate_manager(requested)
        self.https = certificate is not None
        if certificate is not None:
            self.listener = self.load_balancer.add_listener(
                "Https",
                port=443,
                protocol=elbv2.ApplicationProtocol.HTTPS,
                certificates=[certificate],
                ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS,
                open=True,
            )
            redirect = self.load_balancer.add_redirect(source_port=80, target_port=443)
            self.public_listeners = [self.listener, redirect]
        else:
            self.listener = self.load_balancer.add_listener(
                "Http", port=80, protocol=elbv2.ApplicationProtocol.HTTP, open=True
            )
            self.public_listeners = [self.listener]
        for listener in self.public_listeners:
            _hide_internal_paths(listener)
        self.target_group = self.listener.add_targets(
            "Gateway",
            port=CONTAINER_PORT,
            protocol=elbv2.ApplicationProtocol.HTTP,
            targets=[
                self.service.load_balancer_target(
                    container_name=CONTAINER_NAME, container_port=CONTAINER_PORT
                )
            ],
            health_check=elbv2.HealthCheck(
                path=HEALTH_CHECK_PATH,
                healthy_http_codes="200",
                interval=Duration.seconds(15),
                timeout=Duration.seconds(5),
                healthy_threshold_count=2,
                unhealthy_threshold_count=3,
            ),
            deregistration_delay=Duration.seconds(props.deregistration_delay_seconds),
        )

        self._acknowledge()

        scaling = self.service.auto_scale_task_count(
            min_capacity=props.min_tasks, max_capacity=props.max_tasks
        )
        scaling.scale_on_cpu_utilization(
            "Cpu",
            target_utilization_percent=props.cpu_target_percent,
            scale_in_cooldown=Duration.minutes(5),
            scale_out_cooldown=Duration.minutes(1),
        )
        scaling.scale_on_request_count(
            "Requests",
            requests_per_target=props.requests_per_target,
            target_group=self.target_group,
            scale_in_cooldown=Duration.minutes(5),
            scale_out_cooldown=Duration.minutes(1),
        )

    def _acknowledge(self) -> None:
        """Findings accepted for a public API endpoint."""
        acknowledge(
            self.alb_security_group,
            "AwsSolutions-EC23",
            reason="public API: the ALB must accept HTTPS (and HTTP, only to redirect) "
            "from any address; every request is authenticated by JWT at the gateway",
        )
        acknowledge(
            self.access_logs,
            "AwsSolutions-S1",
            reason="this bucket receives the ALB access logs; logging the log bucket "
            "itself would recurse",
        )
        acknowledge_task_definition(self.task_definition)

    @property
    def url(self) -> str:
        """The ALB's own URL (https when a certificate is configured)."""
        scheme = "https" if self.https else "http"
        return f"{scheme}://{self.load_balancer.load_balancer_dns_name}"


def _hide_internal_paths(listener: elbv2.ApplicationListener) -> None:
    """Answer ``INTERNAL_PATHS`` with a fixed 404 on ``listener``, before any other rule."""
    listener.add_action(
        "HideInternalPaths",
        priority=INTERNAL_PATHS_PRIORITY,
        conditions=[elbv2.ListenerCondition.path_patterns(INTERNAL_PATHS)],
        action=elbv2.ListenerAction.fixed_response(
            404, content_type="text/plain", message_body="Not Found"
        ),
    )
