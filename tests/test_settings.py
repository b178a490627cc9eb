"""Services build settings from the registry, with the environment on top."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.gateway.settings import load_settings as load_gateway
from services.registry import keys
from services.worker.settings import load_settings as load_worker


def _registry_file(tmp_path: Path, env: str, values: dict[str, str]) -> Path:
    path = tmp_path / "registry.json"
    path.write_text(
        json.dumps({env: {k: {"value": v, "type": "String"} for k, v in values.items()}})
    )
    return path


def test_gateway_reads_issuer_and_client_ids_from_the_file_registry(tmp_path):
    """With the file backend, Cognito ids come from the registry of TINYLLAMA_ENV."""
    path = _registry_file(
        tmp_path,
        "dev",
        {
            keys.JWT_ISSUER: "https://cognito-idp.eu-west-1.amazonaws.com/pool",
            keys.JWT_JWKS_URL: "https://cognito-idp.eu-west-1.amazonaws.com/pool/.well-known/jwks.json",
            keys.JWT_CLIENT_IDS: '["desktop", "machine"]',
            keys.GATEWAY_RATE_LIMIT: "7.5",
        },
    )
    settings = load_gateway({"TINYLLAMA_ENV": "dev", "TINYLLAMA_REGISTRY_FILE": str(path)})
    assert settings.jwt_issuer.endswith("/pool")
    assert settings.jwt_client_ids == ("desktop", "machine")
    assert settings.rate_limit == 7.5


def test_environment_overrides_the_registry(tmp_path):
    """An explicitly set variable wins over the registry value."""
    path = _registry_file(
        tmp_path, "dev", {keys.JWT_JWKS_URL: "https://a/jwks.json", keys.GATEWAY_RATE_LIMIT: "7"}
    )
    settings = load_gateway(
        {"TINYLLAMA_ENV": "dev", "TINYLLAMA_REGISTRY_FILE": str(path), "TINYLLAMA_RATE_LIMIT": "2"}
    )
    assert settings.rate_limit == 2.0


def test_other_environments_values_are_not_used(tmp_path):
    """Values under another environment's path never leak into this one."""
    path = _registry_file(tmp_path, "prod", {keys.JWT_JWKS_URL: "https://prod/jwks.json"})
    with pytest.raises(ValueError, match="TINYLLAMA_JWKS_URL is required"):
        load_gateway({"TINYLLAMA_ENV": "dev", "TINYLLAMA_REGISTRY_FILE": str(path)})


def test_redis_password_is_injected_and_hidden(tmp_path):
    """REDIS_PASSWORD (an ECS secret) goes into the URL, and the URL stays out of repr."""
    path = _registry_file(
        tmp_path,
        "dev",
        {keys.REDIS_URL: "rediss://cache.example:6379/0", keys.JWT_JWKS_URL: "https://a/jwks.json"},
    )
    settings = load_gateway(
        {"TINYLLAMA_ENV": "dev", "TINYLLAMA_REGISTRY_FILE": str(path), "REDIS_PASSWORD": "s3cr3t/+"}
    )
    assert settings.redis_url == "rediss://:s3cr3t%2F%2B@cache.example:6379/0"
    assert "s3cr3t" not in repr(settings)


def test_worker_reads_model_and_queue_from_the_registry(tmp_path):
    """The worker takes its model id and queue from the registry."""
    path = _registry_file(
        tmp_path, "qa", {keys.MODEL_ID: "s3://models/tinyllama", keys.QUEUE_NAME: "arq:qa"}
    )
    settings = load_worker({"TINYLLAMA_ENV": "qa", "TINYLLAMA_REGISTRY_FILE": str(path)})
    assert settings.model == "s3://models/tinyllama"
    assert settings.queue_name == "arq:qa"


def test_malformed_numbers_are_errors_not_defaults():
    """A non-number in a numeric setting is a clear error naming the variable."""
    with pytest.raises(ValueError, match="TINYLLAMA_MAX_BATCH"):
        load_worker({"TINYLLAMA_MAX_BATCH": "lots", "TINYLLAMA_REGISTRY_FILE": "/nonexistent"})


def test_boolean_zero_is_false_and_junk_is_an_error():
    """'0' means false (not truthy), and an unknown word is refused."""
    assert load_worker({"TINYLLAMA_WARMUP": "0"}).warmup is False
    with pytest.raises(ValueError, match="TINYLLAMA_WARMUP"):
        load_worker({"TINYLLAMA_WARMUP": "maybe"})


def test_gateway_reads_the_ssm_registry_over_http(aws_environ):
    """In AWS mode the gateway's ids come from SSM (moto's HTTP server here), one call."""
    import boto3

    ssm = boto3.client("ssm")
    base = "/tinyllama/settingstest/"
    ssm.put_parameter(Name=base + keys.JWT_ISSUER, Value="https://issuer.example", Type="String")
    ssm.put_parameter(
        Name=base + keys.JWT_JWKS_URL, Value="https://issuer.example/jwks.json", Type="String"
    )
    ssm.put_parameter(
        Name=base + keys.REDIS_URL, Value="rediss://r.example:6379/0", Type="SecureString"
    )
    settings = load_gateway(
        {**aws_environ, "TINYLLAMA_ENV": "settingstest", "TINYLLAMA_REGISTRY": "ssm"}
    )
    assert settings.jwt_issuer == "https://issuer.example"
    assert settings.redis_url == "rediss://r.example:6379/0"
