"""The gateway's one frozen settings object, built once at start-up."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from services.protocol import names
from services.registry import keys
from services.registry.layering import layered_environ, redis_url_with_password
from services.registry.values import parse_list, present, read_fields

# Which registry key feeds which setting (an environment variable of the same meaning wins).
REGISTRY_SOURCES: dict[str, str] = {
    keys.JWT_ISSUER: "TINYLLAMA_JWT_ISSUER",
    keys.JWT_JWKS_URL: "TINYLLAMA_JWKS_URL",
    keys.JWT_CLIENT_IDS: "TINYLLAMA_JWT_CLIENT_IDS",
    keys.JWT_ADMIN_SCOPE: "TINYLLAMA_ADMIN_SCOPE",
    keys.REDIS_URL: "REDIS_URL",
    keys.QUEUE_NAME: "TINYLLAMA_QUEUE_NAME",
    keys.QUEUE_MAX_DEPTH: "TINYLLAMA_MAX_QUEUE_DEPTH",
    keys.GATEWAY_RATE_LIMIT: "TINYLLAMA_RATE_LIMIT",
    keys.GPU_CLUSTER: "TINYLLAMA_GPU_CLUSTER",
    keys.GPU_SERVICE: "TINYLLAMA_GPU_SERVICE",
    keys.GPU_AUTO_SCALING_GROUP: "TINYLLAMA_GPU_AUTO_SCALING_GROUP",
    keys.GPU_INSTANCE_TYPE: "TINYLLAMA_GPU_INSTANCE_TYPE",
    keys.GPU_HOURLY_PRICE_USD: "TINYLLAMA_GPU_HOURLY_PRICE",
    keys.BUDGET_WARN_USD: "TINYLLAMA_BUDGET_WARN_USD",
    keys.BUDGET_HARD_STOP_USD: "TINYLLAMA_BUDGET_HARD_STOP_USD",
}
FLEETS = ("none", "local", "aws")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GatewaySettings:
    """Everything the gateway needs to run; nothing else reads the environment."""

    env: str = "local"
    host: str = "127.0.0.1"
    port: int = 8080
    redis_url: str = dataclasses.field(default="redis://127.0.0.1:6379/0", repr=False)
    queue_name: str = names.QUEUE_NAME
    jwt_issuer: str = "tinyllama-local"
    jwks_url: str = ""
    jwt_client_ids: tuple[str, ...] = ("tinyllama-local",)
    jwt_audiences: tuple[str, ...] = ()
    allow_id_tokens: bool = False
    jwt_leeway_s: int = 30
    jwks_refresh_s: float = 3600.0
    jwks_unknown_kid_interval_s: float = 60.0
    admin_scope: str = "tinyllama/admin"
    admin_groups: tuple[str, ...] = ()  # Cognito groups whose members are operators
    required_scope: str = ""  # every authenticated route needs it (or admin); "" = none
    rate_limit: float = 5.0
    max_queue_depth: int = 256
    max_body_bytes: int = 256 * 1024
    max_prompt_chars: int = 32_768
    wait_timeout_s: float = 60.0
    job_deadline_s: float = 300.0
    result_ttl_s: int = 86_400
    heartbeat_max_age_s: float = 15.0
    sse_ping_s: float = 15.0
    header_timeout_s: float = 10.0  # a request's headers, from its first byte
    body_timeout_s: float = 30.0  # a request's body, once its headers are in
    redis_timeout_s: float = 2.0  # any one Redis command: a hung Redis is a prompt 503
    redis_max_connections: int = 64  # per gateway process, streams included
    max_streams_per_job: int = 4  # open SSE streams of one job, per gateway process
    max_streams_per_subject: int = 16  # open SSE streams of one caller, per gateway process
    fleet: str = "none"  # none | local | aws: who starts and stops the GPU workers
    idle_unit_s: float = 60.0  # one "idle minute" (tests shorten it)
    fleet_tick_s: float = 0.5
    fleet_start_timeout_s: float = 900.0
    gpu_workers: int = 1
    gpu_cluster: str = ""
    gpu_service: str = ""
    gpu_auto_scaling_group: str = ""  # the GPU hosts' group (warm pool); "" = ECS scales them
    gpu_drain_timeout_s: float = 8.0  # a stop waits this long for worker tasks, then stops hosts
    gpu_instance_type: str = "g5.xlarge"
    gpu_hourly_price_usd: float = 1.006
    budget_warn_usd: float = 0.0
    budget_hard_stop_usd: float = 0.0
    publish_metrics: bool = False  # CloudWatch backlog for the autoscaler (AWS)
    # Names /v1 accepts as `model` besides the one the workers report (their hub id).
    model_aliases: tuple[str, ...] = ("tinyllama",)


def load_settings(environ: Mapping[str, str]) -> GatewaySettings:
    """Settings from the registry (``TINYLLAMA_ENV``'s path) with ``environ`` on top.

    Malformed values are errors, never silently defaulted.
    """
    environ = layered_environ(environ, sources=REGISTRY_SOURCES)
    defaults = GatewaySettings()
    values: dict[str, object] = read_fields(
        environ,
        fields={
            "env": ("TINYLLAMA_ENV", str),
            "host": ("TINYLLAMA_HOST", str),
            "redis_url": ("REDIS_URL", str),
            "queue_name": ("TINYLLAMA_QUEUE_NAME", str),
            "jwt_issuer": ("TINYLLAMA_JWT_ISSUER", str),
            "jwks_url": ("TINYLLAMA_JWKS_URL", str),
            "admin_scope": ("TINYLLAMA_ADMIN_SCOPE", str),
            "required_scope": ("TINYLLAMA_REQUIRED_SCOPE", str),
            "fleet": ("TINYLLAMA_FLEET", str),
            "gpu_cluster": ("TINYLLAMA_GPU_CLUSTER", str),
            "gpu_service": ("TINYLLAMA_GPU_SERVICE", str),
            "gpu_auto_scaling_group": ("TINYLLAMA_GPU_AUTO_SCALING_GROUP", str),
            "gpu_drain_timeout_s": ("TINYLLAMA_GPU_DRAIN_TIMEOUT", float),
            "gpu_instance_type": ("TINYLLAMA_GPU_INSTANCE_TYPE", str),
            "port": ("TINYLLAMA_PORT", int),
            "jwt_leeway_s": ("TINYLLAMA_JWT_LEEWAY", int),
            "jwks_refresh_s": ("TINYLLAMA_JWKS_REFRESH", float),
            "rate_limit": ("TINYLLAMA_RATE_LIMIT", float),
            "max_queue_depth": ("TINYLLAMA_MAX_QUEUE_DEPTH", int),
            "max_body_bytes": ("TINYLLAMA_MAX_BODY_BYTES", int),
            "max_prompt_chars": ("TINYLLAMA_MAX_PROMPT_CHARS", int),
            "wait_timeout_s": ("TINYLLAMA_WAIT_TIMEOUT", float),
            "job_deadline_s": ("TINYLLAMA_JOB_DEADLINE", float),
            "heartbeat_max_age_s": ("TINYLLAMA_HEARTBEAT_MAX_AGE", float),
            "sse_ping_s": ("TINYLLAMA_SSE_PING", float),
            "header_timeout_s": ("TINYLLAMA_HEADER_TIMEOUT", float),
            "body_timeout_s": ("TINYLLAMA_BODY_TIMEOUT", float),
            "redis_timeout_s": ("TINYLLAMA_REDIS_TIMEOUT", float),
            "redis_max_connections": ("TINYLLAMA_REDIS_MAX_CONNECTIONS", int),
            "max_streams_per_job": ("TINYLLAMA_MAX_STREAMS_PER_JOB", int),
            "max_streams_per_subject": ("TINYLLAMA_MAX_STREAMS_PER_SUBJECT", int),
            "idle_unit_s": ("TINYLLAMA_IDLE_UNIT_S", float),
            "fleet_tick_s": ("TINYLLAMA_FLEET_TICK", float),
            "fleet_start_timeout_s": ("TINYLLAMA_FLEET_START_TIMEOUT", float),
            "gpu_workers": ("TINYLLAMA_GPU_WORKERS", int),
            "gpu_hourly_price_usd": ("TINYLLAMA_GPU_HOURLY_PRICE", float),
            "budget_warn_usd": ("TINYLLAMA_BUDGET_WARN_USD", float),
            "budget_hard_stop_usd": ("TINYLLAMA_BUDGET_HARD_STOP_USD", float),
            "publish_metrics": ("TINYLLAMA_PUBLISH_METRICS", bool),
            "allow_id_tokens": ("TINYLLAMA_ALLOW_ID_TOKENS", bool),
        },
    )
    if (value := present(environ, "TINYLLAMA_JWT_CLIENT_IDS")) is not None:
        values["jwt_client_ids"] = parse_list(value)
    if (value := present(environ, "TINYLLAMA_JWT_AUDIENCES")) is not None:
        values["jwt_audiences"] = parse_list(value)
    if (value := present(environ, "TINYLLAMA_ADMIN_GROUPS")) is not None:
        values["admin_groups"] = parse_list(value)
    if (value := present(environ, "TINYLLAMA_MODEL_ALIASES")) is not None:
        values["model_aliases"] = parse_list(value)
    if present(environ, "REDIS_PASSWORD"):
        url = str(values.get("redis_url", defaults.redis_url))
        values["redis_url"] = redis_url_with_password(url, present(environ, "REDIS_PASSWORD"))
    settings = dataclasses.replace(defaults, **values)
    if not settings.jwks_url:
        raise ValueError(
            "TINYLLAMA_JWKS_URL is required (https://, http:// or file:// URL of a JWKS)"
        )
    if settings.fleet not in FLEETS:
        raise ValueError(
            f"TINYLLAMA_FLEET must be one of {', '.join(FLEETS)}, got {settings.fleet!r}"
        )
    if settings.fleet == "aws" and not (settings.gpu_cluster and settings.gpu_service):
        raise ValueError(
            "TINYLLAMA_FLEET=aws needs the GPU cluster and service names "
            "(registry gpu/cluster and gpu/service, or TINYLLAMA_GPU_CLUSTER/_SERVICE)"
        )
    if settings.rate_limit <= 0:
        raise ValueError("TINYLLAMA_RATE_LIMIT must be > 0")
    return settings
