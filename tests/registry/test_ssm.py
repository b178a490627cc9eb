"""SSM specifics, checked against moto's HTTP server through a normally signed boto3 client."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from services.registry import BackendError, Registry, open_registry
from services.registry.ssm import _backend_error, create_ssm_client


@pytest.fixture
def ssm(aws_environ: dict[str, str], env_name: str) -> Registry:
    """A registry on the SSM backend, built by the factory like a service would."""
    return open_registry(environ={"TINYLLAMA_ENV": env_name, "TINYLLAMA_REGISTRY": "ssm"})


def test_parameters_live_under_the_documented_path(ssm: Registry) -> None:
    """put() writes the SSM parameter /tinyllama/<env>/<key> as a String."""
    ssm.put("model/id", "tiny")

    stored = ssm.backend.client.get_parameter(Name=f"/tinyllama/{ssm.env}/model/id")  # type: ignore[attr-defined]

    assert stored["Parameter"]["Value"] == "tiny"
    assert stored["Parameter"]["Type"] == "String"


def test_secure_values_are_stored_encrypted(ssm: Registry) -> None:
    """A secure put() creates an SSM SecureString, unreadable without decryption."""
    ssm.put("redis/password", "hunter2-very-secret", secure=True)

    stored = ssm.backend.client.get_parameter(  # type: ignore[attr-defined]
        Name=f"/tinyllama/{ssm.env}/redis/password", WithDecryption=False
    )["Parameter"]

    assert stored["Type"] == "SecureString"
    assert stored["Value"] != "hunter2-very-secret"
    assert ssm.get("redis/password").reveal() == "hunter2-very-secret"


def test_generic_endpoint_variable_is_honoured(
    aws_environ: dict[str, str], monkeypatch: pytest.MonkeyPatch, env_name: str
) -> None:
    """With only AWS_ENDPOINT_URL set, boto3 still sends SSM calls to that endpoint."""
    monkeypatch.delenv("AWS_ENDPOINT_URL_SSM")
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_environ["AWS_ENDPOINT_URL_SSM"])

    client = create_ssm_client()
    registry = open_registry(environ={"TINYLLAMA_ENV": env_name, "TINYLLAMA_REGISTRY": "ssm"})
    registry.put("model/id", "tiny")

    assert client.meta.endpoint_url == aws_environ["AWS_ENDPOINT_URL_SSM"]
    assert registry.get("model/id") == "tiny"


def test_missing_region_is_a_registry_error(
    aws_environ: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without any AWS region configured, opening the SSM backend raises BackendError."""
    monkeypatch.delenv("AWS_DEFAULT_REGION")

    with pytest.raises(BackendError, match="region"):
        open_registry(environ={"TINYLLAMA_REGISTRY": "ssm"})


def test_rejected_write_is_a_one_line_error(ssm: Registry) -> None:
    """SSM refusing a write (empty value) raises a one-line BackendError naming the path."""
    with pytest.raises(BackendError) as raised:
        ssm.put("model/id", "")

    assert "\n" not in str(raised.value)
    assert "ValidationException" in str(raised.value)
    assert f"/tinyllama/{ssm.env}/model/id" in str(raised.value)


def test_echoed_secure_value_is_masked_in_errors() -> None:
    """If SSM echoes a rejected value in its error message, the message masks it."""
    error = ClientError(
        {"Error": {"Code": "ValidationException", "Message": "Value 'hunter2-x' is too long"}},
        "PutParameter",
    )

    message = str(_backend_error("write", "/tinyllama/dev/k", error, hide="hunter2-x"))

    assert "hunter2" not in message
    assert "**********" in message
