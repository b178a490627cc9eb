"""Gateway: the aiohttp service on Fargate behind an ALB, HTTPS in every environment.

With a custom domain the ALB is internet-facing and terminates TLS with an ACM
certificate (HTTP :80 only redirects). Without one, CloudFront terminates TLS on
its own ``*.cloudfront.net`` name and reaches an *internal* ALB as a VPC origin:
no listener on the internet speaks plain HTTP, and no domain is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
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
# CloudFront keeps idle connections to the origin this long (its maximum without
# a quota increase); the ALB's own idle timeout is longer.
ORIGIN_KEEPALIVE_SECONDS = 60


@dataclass(frozen=True, kw_only=True)
class GatewayProps:
    """Size, scaling and edge settings of the gateway."""

    certificate_arn: str | None  # an existing ACM certificate for the HTTPS listener
    domain_name: str | None = None  # no ARN: request a DNS-validated certificate for this name
    # Neither: CloudFront in front of an internal ALB, waiting this long for the next byte.
    origin_read_timeout_seconds: int = 120
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
        vpc_cidr: str,
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

        certificate = _certificate(self, props)
        public = certificate is not None
        self.alb_security_group = ec2.SecurityGroup(
            self,
            "AlbSecurityGroup",
            vpc=vpc,
            allow_all_outbound=False,
            description=(
                "Public ALB: HTTPS (and HTTP to redirect) from the internet"
                if public
                else "Internal ALB: HTTP from the CloudFront VPC origin (inside the VPC) only"
            ),
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
            vpc_subnets=public_subnets if public else private_subnets,
            internet_facing=public,
            security_group=self.alb_security_group,
            idle_timeout=Duration.seconds(props.idle_timeout_seconds),
            drop_invalid_header_fields=True,
            deletion_protection=props.removal_policy == RemovalPolicy.RETAIN,
        )
        self.load_balancer.log_access_logs(self.access_logs, prefix="alb")

        self.distribution: cloudfront.Distribution | None = None
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
            self.listeners = [self.listener, redirect]
        else:
            # Reached only through CloudFront: its VPC origin's network interfaces live in
            # this VPC, so the listener admits the VPC's own range and nothing else.
            self.listener = self.load_balancer.add_listener(
                "Http", port=80, protocol=elbv2.ApplicationProtocol.HTTP, open=False
            )
            self.alb_security_group.add_ingress_rule(
                ec2.Peer.ipv4(vpc_cidr),
                ec2.Port.tcp(80),
                "CloudFront VPC origin (its interfaces are in this VPC)",
            )
            self.listeners = [self.listener]
            self.distribution = self._distribution(props)
        for listener in self.listeners:
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

        self._acknowledge(public=public)

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

    def _distribution(self, props: GatewayProps) -> cloudfront.Distribution:
        """HTTPS on CloudFront's own name, forwarding everything, caching nothing.

        An API, not a website: every method passes, no response is cached
        (``CachingDisabled``), and every viewer header but Host reaches the gateway
        (``AllViewerExceptHostHeader``; with caching disabled that includes
        ``Authorization``). Plain HTTP is refused (403), not redirected: a redirect
        would come after the bearer token had already crossed the network in clear.
        The origin read timeout outlasts the gateway's synchronous wait and two SSE
        pings, so neither a waiting ``/infer`` nor a quiet stream is cut.
        """
        origin = origins.VpcOrigin.with_application_load_balancer(
            self.load_balancer,
            protocol_policy=cloudfront.OriginProtocolPolicy.HTTP_ONLY,
            http_port=80,
            read_timeout=Duration.seconds(props.origin_read_timeout_seconds),
            keepalive_timeout=Duration.seconds(ORIGIN_KEEPALIVE_SECONDS),
        )
        distribution = cloudfront.Distribution(
            self,
            "Edge",
            comment="TinyLlama API: HTTPS in front of the internal ALB",
            default_behavior=cloudfront.BehaviorOptions(
                origin=origin,
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.HTTPS_ONLY,
                allowed_methods=cloudfront.AllowedMethods.ALLOW_ALL,
                cache_policy=cloudfront.CachePolicy.CACHING_DISABLED,
                origin_request_policy=cloudfront.OriginRequestPolicy.ALL_VIEWER_EXCEPT_HOST_HEADER,
                compress=False,  # never hold back SSE bytes to compress them
            ),
            http_version=cloudfront.HttpVersion.HTTP2_AND_3,
            price_class=cloudfront.PriceClass.PRICE_CLASS_100,
        )
        for rule, reason in (
            (
                "AwsSolutions-CFR1",
                "an authenticated API for any caller's location; every request needs a JWT",
            ),
            (
                "AwsSolutions-CFR2",
                "no WAF: every request is authenticated (JWT) and rate limited per subject "
                "at the gateway; add a web ACL here when abuse shows up",
            ),
            (
                "AwsSolutions-CFR3",
                "every request CloudFront forwards is logged by the ALB behind it "
                "(access logs bucket); CloudFront's standard logs need bucket ACLs",
            ),
            (
                "AwsSolutions-CFR4",
                "the default *.cloudfront.net certificate cannot pin a minimum TLS version; "
                "environments with a custom domain terminate TLS 1.2+ at the ALB instead",
            ),
        ):
            acknowledge(distribution, rule, reason=reason)
        return distribution

    def _acknowledge(self, *, public: bool) -> None:
        """Findings accepted for the API endpoint."""
        if public:
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
        """The API's HTTPS URL: CloudFront's name, or the public ALB's own name.

        With a custom domain, use ``https://<api_domain_name>`` instead: the ALB's
        DNS name does not match the certificate.
        """
        if self.distribution is not None:
            return f"https://{self.distribution.distribution_domain_name}"
        return f"https://{self.load_balancer.load_balancer_dns_name}"


def _certificate(scope: Construct, props: GatewayProps) -> elbv2.ListenerCertificate | None:
    """The ALB's certificate: the given ARN, one requested for the domain, or none."""
    if props.certificate_arn is not None:
        return elbv2.ListenerCertificate.from_arn(props.certificate_arn)
    if props.domain_name is not None:
        requested = acm.Certificate(
            scope,
            "Certificate",
            domain_name=props.domain_name,
            validation=acm.CertificateValidation.from_dns(),
        )
        return elbv2.ListenerCertificate.from_certificate_manager(requested)
    return None


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
