"""The TinyLlama stack: composes one construct per concern and does the grants."""

from __future__ import annotations

import json
from pathlib import Path

from aws_cdk import CfnOutput, Duration, Environment, RemovalPolicy, Stack, Tags
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk.config import CDK_BOOTSTRAP_QUALIFIER, ENV_TAG, VPC_CIDR, EnvConfig
from cdk.dashboard import Dashboard, DashboardProps
from cdk.deploy_role import DeployRole
from cdk.gateway import Gateway, GatewayProps
from cdk.identity import Identity
from cdk.metrics import NAMESPACE
from cdk.nag import acknowledge, rendered
from cdk.network import Network
from cdk.observability import Observability, ObservabilityProps
from cdk.redis_queue import Queue
from cdk.registry import SsmRegistry
from cdk.worker import Worker, WorkerProps
from services.protocol.names import QUEUE_NAME
from services.registry import keys

REPO_ROOT = Path(__file__).resolve().parents[1]
GATEWAY_DOCKERFILE = "docker/gateway.Dockerfile"
WORKER_DOCKERFILE = "docker/worker.Dockerfile"
# The build context is the repo root; keep bulky caches and tool trees out of
# the asset (and out of its fingerprint). The Dockerfiles own the rest.
ASSET_EXCLUDE = [
    ".git",
    ".venv",
    "node_modules",
    "cdk.out",
    ".cache",
    "var",
    ".pytest_cache",
    ".ruff_cache",
    "**/__pycache__",
    "*.pyc",
    "build",
    "dist",
    "*.egg-info",
    ".gl",
]


def stack_name(env_name: str) -> str:
    """Return the CloudFormation stack name of environment ``env_name``."""
    return f"TinyLlama-{env_name}"


class TinyLlamaStack(Stack):
    """One environment of TinyLlama Serve."""

    def __init__(self, scope: Construct, construct_id: str, *, config: EnvConfig) -> None:
        super().__init__(
            scope,
            construct_id,
            env=Environment(account=config.account, region=config.region),
            description=f"TinyLlama Serve ({config.name}): gateway, queue, GPU worker, auth",
        )
        self._azs = list(config.availability_zones)
        self.config = config
        Tags.of(self).add(ENV_TAG, config.name)
        Tags.of(self).add("project", "tinyllama-serve")
        removal = RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY

        network = Network(
            self,
            "Network",
            cidr=VPC_CIDR,
            nat_gateways=config.nat_gateways,
            log_retention=config.log_retention_days,
            removal_policy=removal,
        )
        self.network = network
        self.registry = SsmRegistry(self, "Registry", env_name=config.name)
        self.identity = Identity(
            self,
            "Identity",
            env_name=config.name,
            access_token_validity=Duration.minutes(config.access_token_minutes),
            id_token_validity=Duration.minutes(config.id_token_minutes),
            refresh_token_validity=Duration.days(config.refresh_token_days),
            callback_urls=list(config.desktop_callback_urls),
            mfa_required=config.mfa_required,
            removal_policy=removal,
        )
        self.queue = Queue(
            self,
            "Queue",
            vpc=network.vpc,
            subnets=network.private_subnets,
            node_type=config.redis_node_type,
            nodes=config.redis_nodes,
            removal_policy=removal,
        )
        environment = {
            "TINYLLAMA_ENV": config.name,
            "TINYLLAMA_REGISTRY": "ssm",
            # Backlog (gateway) and heartbeat (worker) metrics the scaling and alarms read.
            "TINYLLAMA_PUBLISH_METRICS": "true",
        }
        secrets = {"REDIS_PASSWORD": ecs.Secret.from_secrets_manager(self.queue.auth_secret)}

        self.worker = Worker(
            self,
            "Worker",
            props=WorkerProps(
                env_name=config.name,
                instance_type=config.gpu_instance_type,
                max_instances=config.gpu_max_instances,
                memory_reservation_mib=config.worker_memory_reservation_mib,
                idle_stop_minutes=config.worker_idle_stop_minutes,
                log_retention_days=config.log_retention_days,
                removal_policy=removal,
                model_id=config.model_id,
            ),
            vpc=network.vpc,
            subnets=network.private_subnets,
            image=_image_asset(self, "WorkerImage", WORKER_DOCKERFILE),
            environment=environment,
            secrets=secrets,
        )
        self.gateway = Gateway(
            self,
            "Gateway",
            props=GatewayProps(
                certificate_arn=config.certificate_arn,
                domain_name=config.api_domain_name,
                origin_read_timeout_seconds=config.cloudfront_read_timeout_seconds,
                cpu=config.gateway_cpu,
                memory_mib=config.gateway_memory_mib,
                min_tasks=config.gateway_min_tasks,
                max_tasks=config.gateway_max_tasks,
                cpu_target_percent=config.gateway_cpu_target_percent,
                requests_per_target=config.gateway_requests_per_target,
                idle_timeout_seconds=config.alb_idle_timeout_seconds,
                deregistration_delay_seconds=config.deregistration_delay_seconds,
                log_retention_days=config.log_retention_days,
                removal_policy=removal,
            ),
            cluster=self.worker.cluster,
            vpc=network.vpc,
            vpc_cidr=VPC_CIDR,
            public_subnets=network.public_subnets,
            private_subnets=network.private_subnets,
            image=_image(GATEWAY_DOCKERFILE),
            # The gateway's controller starts and stops the GPU service (ecs:UpdateService);
            # every caller needs the invoke scope (both app clients may ask for it).
            environment={
                **environment,
                "TINYLLAMA_FLEET": "aws",
                "TINYLLAMA_REQUIRED_SCOPE": self.identity.invoke_scope_name,
            },
            secrets=secrets,
        )
        self.observability = Observability(
            self,
            "Observability",
            props=ObservabilityProps(
                env_name=config.name,
                alarm_emails=config.alarm_emails,
                budget_emails=config.budget_emails,
                budget_monthly_usd=config.budget_monthly_usd,
                budget_warn_usd=config.budget_warn_usd,
                budget_hard_stop_usd=config.budget_hard_stop_usd,
                queue_max_depth=config.queue_max_depth,
            ),
            load_balancer=self.gateway.load_balancer,
            worker_cluster_name=self.worker.cluster.cluster_name,
            worker_service_name=self.worker.service.service_name,
        )
        self.dashboard = Dashboard(
            self,
            "Dashboard",
            props=DashboardProps(
                env_name=config.name,
                budget_warn_usd=config.budget_warn_usd,
                budget_hard_stop_usd=config.budget_hard_stop_usd,
                budget_monthly_usd=config.budget_monthly_usd,
            ),
            load_balancer=self.gateway.load_balancer,
            distribution=self.gateway.distribution,
            worker_cluster_name=self.worker.cluster.cluster_name,
            worker_service_name=self.worker.service.service_name,
            gpu_group_name=self.worker.auto_scaling_group.auto_scaling_group_name,
        )
        self.deploy_role = DeployRole(
            self,
            "CiDeploy",
            github_repo=config.github_repo,
            github_environment=config.github_environment,
            create_provider=config.create_github_oidc_provider,
            bootstrap_qualifier=CDK_BOOTSTRAP_QUALIFIER,
        )
        self.deploy_role.allow_release_pipeline(
            registry=self.registry,
            user_pool=self.identity.user_pool,
            promote_from=config.promote_from,
        )
        self._grant()
        self._write_registry()
        self._outputs()

    @property
    def availability_zones(self) -> list[str]:
        """The configured AZs of a bound stack (no lookup), else CDK's default."""
        return self._azs or super().availability_zones

    def _grant(self) -> None:
        """Connect the pieces: Redis ingress, registry reads, fleet control, metrics."""
        self.queue.allow_from(self.gateway.security_group, description="gateway tasks")
        self.queue.allow_from(self.worker.security_group, description="worker tasks")
        for peer, description in (
            (self.gateway.security_group, "gateway tasks"),
            (self.worker.security_group, "worker tasks"),
            (self.worker.instance_security_group, "GPU hosts (ECS agent, image pulls)"),
        ):
            self.network.allow_endpoints_from(peer, description=description)
        gateway_role = self.gateway.task_definition.task_role
        worker_role = self.worker.task_definition.task_role
        for role in (gateway_role, worker_role):
            self.registry.grant_read(role)
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    sid="PutOwnMetrics",
                    actions=["cloudwatch:PutMetricData"],
                    resources=["*"],  # PutMetricData has no resource-level permissions
                    conditions={"StringEquals": {"cloudwatch:namespace": NAMESPACE}},
                )
            )
        self.worker.grant_fleet_control(gateway_role, env_name=self.config.name)
        if self.config.model_bucket_name:
            bucket = s3.Bucket.from_bucket_name(self, "ModelBucket", self.config.model_bucket_name)
            # The worker loads from it; a GPU host prefetches from it while it warms up.
            for role in (worker_role, self.worker.instance_role):
                role.add_to_principal_policy(
                    iam.PolicyStatement(
                        sid="ListModels", actions=["s3:ListBucket"], resources=[bucket.bucket_arn]
                    )
                )
                role.add_to_principal_policy(
                    iam.PolicyStatement(
                        sid="ReadModels",
                        actions=["s3:GetObject"],
                        resources=[bucket.arn_for_objects("*")],
                    )
                )
                acknowledge(
                    role,
                    f"AwsSolutions-IAM5[Resource::{rendered(self, bucket.arn_for_objects('*'))}]",
                    reason="reads the model weights: every object of the one configured "
                    "model bucket (the prefix is the model id's, chosen at deploy)",
                )

    def _write_registry(self) -> None:
        """Publish every cross-component id under ``/tinyllama/<env>/``."""
        c, put = self.config, self.registry.put
        identity = self.identity
        put(keys.API_URL, f"https://{c.api_domain_name}" if c.api_domain_name else self.gateway.url)
        put(keys.COGNITO_USER_POOL_ID, identity.user_pool.user_pool_id)
        put(keys.COGNITO_DESKTOP_CLIENT_ID, identity.desktop_client.user_pool_client_id)
        put(keys.COGNITO_MACHINE_CLIENT_ID, identity.machine_client.user_pool_client_id)
        put(keys.COGNITO_DOMAIN, identity.domain.base_url())
        put(keys.JWT_ISSUER, identity.issuer)
        put(keys.JWT_JWKS_URL, identity.jwks_url)
        put(keys.JWT_CLIENT_IDS, self.to_json_string(identity.client_ids))
        put(keys.JWT_ADMIN_SCOPE, identity.admin_scope_name)
        put(keys.REDIS_URL, self.queue.url)
        put(keys.REDIS_AUTH_SECRET_ARN, self.queue.auth_secret.secret_arn)
        put(keys.QUEUE_NAME, QUEUE_NAME)
        put(keys.QUEUE_MAX_DEPTH, str(c.queue_max_depth))
        put(keys.GATEWAY_RATE_LIMIT, json.dumps(c.gateway_rate_limit))
        put(keys.MODEL_ID, c.model_id)
        put(keys.GPU_CLUSTER, self.worker.cluster.cluster_name)
        put(keys.GPU_SERVICE, self.worker.service.service_name)
        put(keys.GPU_AUTO_SCALING_GROUP, self.worker.auto_scaling_group.auto_scaling_group_name)
        put(keys.GPU_INSTANCE_TYPE, c.gpu_instance_type)
        put(keys.GPU_HOURLY_PRICE_USD, json.dumps(c.gpu_hourly_price_usd))
        put(keys.BUDGET_MONTHLY_USD, json.dumps(c.budget_monthly_usd))
        put(keys.BUDGET_WARN_USD, json.dumps(c.budget_warn_usd))
        put(keys.BUDGET_HARD_STOP_USD, json.dumps(c.budget_hard_stop_usd))

    def _outputs(self) -> None:
        """What the operator needs after ``cdk deploy`` (README walks through them)."""
        identity = self.identity
        outputs = {
            "ApiUrl": self.gateway.url,
            "UserPoolId": identity.user_pool.user_pool_id,
            "DesktopClientId": identity.desktop_client.user_pool_client_id,
            "MachineClientId": identity.machine_client.user_pool_client_id,
            "CognitoDomain": identity.domain.base_url(),
            "TokenEndpoint": f"{identity.domain.base_url()}/oauth2/token",
            "RegistryPath": self.registry.path,
            "GpuCluster": self.worker.cluster.cluster_name,
            "GpuService": self.worker.service.service_name,
            "GpuHostGroup": self.worker.auto_scaling_group.auto_scaling_group_name,
            "AlarmTopicArn": self.observability.topic.topic_arn,
            "DeployRoleArn": self.deploy_role.role.role_arn,
        }
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)


def _image_asset(
    scope: Construct, construct_id: str, dockerfile: str
) -> ecr_assets.DockerImageAsset:
    """The image of ``dockerfile``, built from the repo root at deploy time."""
    return ecr_assets.DockerImageAsset(
        scope,
        construct_id,
        directory=str(REPO_ROOT),
        file=dockerfile,
        exclude=ASSET_EXCLUDE,
        platform=ecr_assets.Platform.LINUX_AMD64,
    )


def _image(dockerfile: str) -> ecs.ContainerImage:
    """Build ``dockerfile`` from the repo root at deploy time (synth only stages it)."""
    return ecs.ContainerImage.from_asset(
        str(REPO_ROOT),
        file=dockerfile,
        exclude=ASSET_EXCLUDE,
        platform=ecr_assets.Platform.LINUX_AMD64,
    )
