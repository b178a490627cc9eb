"""The gateway's one frozen settings object, built once at start-up."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from services.registry import keys
from services.registry.layering import layered_environ, redis_url_with_password
from services.registry.values import parse_bool, parse_list

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
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class GatewaySettings:
    """Everything the gateway needs to run; nothing else reads the environment."""

    env: str = "local"
    host: str = "127.0.0.1"
    port: int = 8080
    redis_url: str = dataclasses.field(default="redis://127.0.0.1:6379/0", repr=False)
    queue_name: str = "arq:queue"
    jwt_issuer: str = "tinyllama-local"
    jwks_url: str = ""
    jwt_client_ids: tuple[str, ...] = ("tinyllama-local",)
    jwt_audiences: tuple[str, ...] = ()
    allow_id_tokens: bool = False
    jwt_leeway_s: int = 30
    jwks_refresh_s: float = 3600.0
    jwks_unknown_kid_interval_s: float = 60.0
    admin_scope: str = "tinyllama/admin"
    rate_limit: float = 5.0
    max_queue_depth: int = 256
    max_body_bytes: int = 256 * 1024
    max_prompt_chars: int = 32_768
    wait_timeout_s: float = 60.0
    job_deadline_s: float = 300.0
    result_ttl_s: int = 86_400
    heartbeat_max_age_s: float = 15.0
    sse_ping_s: float = 15.0


def _get(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name)
    return value if value not in (None, "") else None


def load_settings(environ: Mapping[str, str]) -> GatewaySettings:
    """Settings from the registry (``TINYLLAMA_ENV``'s path) with ``environ`` on top.

    Malformed values are errors, never silently defaulted.
    """
    environ = layered_environ(environ, sources=REGISTRY_SOURCES)
    defaults = GatewaySettings()
    values: dict[str, object] = {}
    text = {
        "env": "TINYLLAMA_ENV",
        "host": "TINYLLAMA_HOST",
        "redis_url": "REDIS_URL",
        "queue_name": "TINYLLAMA_QUEUE_NAME",
        "jwt_issuer": "TINYLLAMA_JWT_ISSUER",
        "jwks_url": "TINYLLAMA_JWKS_URL",
        "admin_scope": "TINYLLAMA_ADMIN_SCOPE",
    }
    for field, name in text.items():
        if (value := _get(environ, name)) is not None:
            values[field] = value
    numbers: dict[str, tuple[str, type]] = {
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
    }
    for field, (name, kind) in numbers.items():
        if (value := _get(environ, name)) is not None:
            try:
                values[field] = kind(value)
            except ValueError:
                raise ValueError(f"{name} must be a number, got {value!r}") from None
    if (value := _get(environ, "TINYLLAMA_JWT_CLIENT_IDS")) is not None:
        values["jwt_client_ids"] = parse_list(value)
    if (value := _get(environ, "TINYLLAMA_JWT_AUDIENCES")) is not None:
        values["jwt_audiences"] = parse_list(value)
    if (value := _get(environ, "TINYLLAMA_ALLOW_ID_TOKENS")) is not None:
        values["allow_id_tokens"] = parse_bool(value, name="TINYLLAMA_ALLOW_ID_TOKENS")
    if _get(environ, "REDIS_PASSWORD"):
        url = str(values.get("redis_url", defaults.redis_url))
        values["redis_url"] = redis_url_with_password(url, _get(environ, "REDIS_PASSWORD"))
    settings = dataclasses.replace(defaults, **values)
    if not settings.jwks_url:
        raise ValueError(
            "TINYLLAMA_JWKS_URL is required (https://, http:// or file:// URL of a JWKS)"
        )
    if settings.rate_limit <= 0:
        raise ValueError("TINYLLAMA_RATE_LIMIT must be > 0")
    return settings
