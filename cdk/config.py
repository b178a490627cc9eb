"""The per-environment configuration table: one frozen record per stack.

Only ``cdk/app.py`` chooses an entry (from ``-c env=NAME``); constructs get
the typed values they need, never this module's table.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from services.gateway.settings import GatewaySettings

VPC_CIDR = "10.20.0.0/22"
CDK_BOOTSTRAP_QUALIFIER = "hnb659fds"
ENV_TAG = "tinyllama:env"  # on every resource; the budget and the fleet's IAM condition use it
DEFAULT_MODEL_ID = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
# The gateway holds a synchronous /infer open (60 s by default) without sending
# a byte, and SSE streams ping every 15 s: CloudFront must wait longer than either.
MIN_ORIGIN_READ_TIMEOUT_S = (
    int(max(GatewaySettings.wait_timeout_s, 2 * GatewaySettings.sse_ping_s)) + 1
)

_ACM_ARN = re.compile(r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[A-Za-z0-9-]+$")
_GITHUB_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


class ConfigError(ValueError):
    """A configuration value, or the environment name, is not acceptable."""


@dataclass(frozen=True, kw_only=True)
class EnvConfig:
    """Everything that differs between dev, qa and prod."""

    name: str
    # Deployment target. The region is always bound (ALB access logs need the
    # region's log-delivery account). ``account=None`` deploys to the CLI's
    # account; a bound account also needs ``availability_zones`` so that synth
    # never looks AZs up.
    region: str = "us-east-1"
    account: str | None = None
    availability_zones: tuple[str, ...] = ()

    # Network
    nat_gateways: int = 0

    # HTTPS in every environment. With a custom domain: an existing ACM
    # certificate in the stack's region (``-c certificate_arn=...`` overrides
    # it), or a DNS-validated one the stack requests for api_domain_name, on a
    # public ALB. Without one: CloudFront on its own *.cloudfront.net name in
    # front of an internal ALB (a VPC origin), so no domain is needed.
    certificate_arn: str | None = None
    api_domain_name: str | None = None  # CNAME to the ALB; used for API_URL
    # CloudFront waits this long for the origin's next byte: longer than the
    # gateway's synchronous wait and two SSE pings (MIN_ORIGIN_READ_TIMEOUT_S);
    # 120 s is CloudFront's maximum without a quota increase.
    cloudfront_read_timeout_seconds: int = 120

    # Identity
    access_token_minutes: int = 60
    id_token_minutes: int = 60
    refresh_token_days: int = 30
    desktop_callback_urls: tuple[str, ...] = ("http://localhost:8765/callback",)
    mfa_required: bool = False

    # Queue (ElastiCache Redis, non-cluster replication group)
    redis_node_type: str = "cache.t4g.micro"
    redis_nodes: int = 1  # >1 gives a replica with automatic Multi-AZ failover
    queue_max_depth: int = 100
    gateway_rate_limit: float = 5.0

    # Gateway (Fargate)
    gateway_cpu: int = 512
    gateway_memory_mib: int = 1024
    gateway_min_tasks: int = 1
    gateway_max_tasks: int = 4
    gateway_cpu_target_percent: int = 60
    gateway_requests_per_target: int = 600  # ALBRequestCountPerTarget, per minute
    alb_idle_timeout_seconds: int = 300
    deregistration_delay_seconds: int = 60

    # Worker (EC2 GPU)
    gpu_instance_type: str = "g5.xlarge"
    gpu_hourly_price_usd: float = 1.006
    gpu_max_instances: int = 1
    worker_memory_reservation_mib: int = 12288
    worker_idle_stop_minutes: int = 30  # safety net behind the gateway's idle stop
    model_id: str = DEFAULT_MODEL_ID
    model_bucket_name: str | None = None

    # Observability and cost
    log_retention_days: int = 30
    alarm_emails: tuple[str, ...] = ()
    budget_monthly_usd: float = 300.0
    budget_warn_usd: float = 200.0
    budget_hard_stop_usd: float = 280.0
    budget_emails: tuple[str, ...] = ()

    # CI deploy role (GitHub Actions OIDC)
    github_repo: str = "tinyllama-serve/tinyllama-serve"
    github_environment: str | None = None  # None: only refs/heads/main may deploy
    promote_from: str | None = None  # the environment whose release this one deploys
    create_github_oidc_provider: bool = True  # one provider per account

    retain_data: bool = False  # RETAIN user pool and log buckets on stack delete

    def __post_init__(self) -> None:
        """Reject values that would deploy something unsafe or broken."""
        if self.account is not None and len(self.availability_zones) != 2:
            raise ConfigError(f"{self.name}: a bound account needs two availability_zones")
        if self.nat_gateways < 0 or self.nat_gateways > 2:
            raise ConfigError(f"{self.name}: nat_gateways must be 0, 1 or 2")
        if self.certificate_arn is not None and not _ACM_ARN.match(self.certificate_arn):
            raise ConfigError(
                f"{self.name}: {self.certificate_arn!r} is not an ACM certificate ARN"
            )
        if not MIN_ORIGIN_READ_TIMEOUT_S <= self.cloudfront_read_timeout_seconds <= 120:
            raise ConfigError(
                f"{self.name}: cloudfront_read_timeout_seconds must be between "
                f"{MIN_ORIGIN_READ_TIMEOUT_S} (longer than the gateway's synchronous wait and "
                "two SSE pings) and 120 (CloudFront's limit without a quota increase)"
            )
        if self.promote_from is not None and (
            self.promote_from == self.name or self.promote_from not in ENVIRONMENTS
        ):
            raise ConfigError(f"{self.name}: promote_from must name another environment")
        if not _GITHUB_REPO.match(self.github_repo):
            raise ConfigError(f"{self.name}: github_repo must look like owner/name")
        if not 0 < self.budget_warn_usd <= self.budget_hard_stop_usd <= self.budget_monthly_usd:
            raise ConfigError(f"{self.name}: need 0 < budget warn <= hard stop <= monthly")
        if not self.budget_emails:
            raise ConfigError(f"{self.name}: budget_emails needs at least one address")
        if self.redis_nodes < 1 or self.gateway_min_tasks < 1:
            raise ConfigError(f"{self.name}: redis_nodes and gateway_min_tasks must be >= 1")
        if self.gateway_max_tasks < self.gateway_min_tasks or self.gpu_max_instances < 1:
            raise ConfigError(f"{self.name}: max task/instance counts are too small")

    @property
    def custom_domain(self) -> bool:
        """Whether the ALB itself terminates TLS (a certificate is given or requested)."""
        return self.certificate_arn is not None or self.api_domain_name is not None

    @property
    def edge(self) -> str:
        """Who terminates HTTPS: ``alb`` (custom domain) or ``cloudfront`` (its own name)."""
        return "alb" if self.custom_domain else "cloudfront"


_OPS_EMAIL = ("tinyllama-ops@example.com",)  # replace before the first deploy

# Each entry overrides EnvConfig's defaults. Kept as keyword arguments, not
# records, because an entry that needs a certificate only validates once the
# certificate ARN (from here or from context) is known.
ENVIRONMENTS: dict[str, dict[str, object]] = {
    "dev": {
        # No domain: HTTPS on the CloudFront distribution's name, the ALB internal.
        "github_environment": "dev",
        "gateway_max_tasks": 2,
        "gpu_instance_type": "g4dn.xlarge",
        "gpu_hourly_price_usd": 0.526,
        "worker_idle_stop_minutes": 15,
        "log_retention_days": 14,
        "budget_monthly_usd": 150.0,
        "budget_warn_usd": 75.0,
        "budget_hard_stop_usd": 140.0,
    },
    "qa": {
        "gpu_instance_type": "g4dn.xlarge",
        "gpu_hourly_price_usd": 0.526,
        "budget_monthly_usd": 200.0,
        "budget_warn_usd": 100.0,
        "budget_hard_stop_usd": 190.0,
        "github_environment": "qa",
        "promote_from": "dev",
        "create_github_oidc_provider": False,  # dev's stack owns it (same account)
    },
    "prod": {
        # Replace before the first deploy; the stack requests its certificate (DNS validation:
        # add the CNAME ACM shows, then CNAME this name to the ALB).
        "api_domain_name": "api.tinyllama.example.com",
        "access_token_minutes": 30,
        "mfa_required": True,
        "redis_node_type": "cache.t4g.small",
        "redis_nodes": 2,
        "queue_max_depth": 500,
        "gateway_min_tasks": 2,
        "gateway_max_tasks": 8,
        "gpu_instance_type": "g5.xlarge",
        "gpu_hourly_price_usd": 1.006,
        "gpu_max_instances": 2,
        "log_retention_days": 90,
        "budget_monthly_usd": 1500.0,
        "budget_warn_usd": 1000.0,
        "budget_hard_stop_usd": 1400.0,
        "github_environment": "prod",
        "promote_from": "qa",
        "retain_data": True,
    },
}


def load_config(name: str, *, certificate_arn: str | None = None) -> EnvConfig:
    """Return the validated configuration of environment ``name``.

    ``certificate_arn``, when given, replaces the table's value (it comes
    from ``-c certificate_arn=...``). Unknown names raise ``ConfigError``.
    """
    if name not in ENVIRONMENTS:
        known = ", ".join(sorted(ENVIRONMENTS))
        raise ConfigError(f"unknown environment {name!r}: choose one of {known} (-c env=NAME)")
    values: dict[str, object] = {
        "budget_emails": _OPS_EMAIL,
        "alarm_emails": _OPS_EMAIL,
        **ENVIRONMENTS[name],
    }
    if certificate_arn:
        values["certificate_arn"] = certificate_arn
    return EnvConfig(name=name, **values)  # type: ignore[arg-type]


def with_overrides(config: EnvConfig, **changes: object) -> EnvConfig:
    """Return a copy of ``config`` with ``changes`` applied and validated."""
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]
