"""A registry backend on AWS Systems Manager Parameter Store, through boto3.

Region, credentials and endpoint come from boto3's standard chain
(``AWS_REGION``/``AWS_DEFAULT_REGION``, profiles, instance roles, and
``AWS_ENDPOINT_URL_SSM`` or ``AWS_ENDPOINT_URL``, which boto3 >= 1.28 reads
itself). Calls block; services make them once at start-up, before serving.

Never turn the ``botocore`` logger up to DEBUG in production: it logs
response bodies, which hold decrypted ``SecureString`` values.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from services.registry.backend import SECURE_STRING, Parameter, is_under
from services.registry.errors import BackendError
from services.registry.keys import parameter_path
from services.registry.secret import MASK

# GetParametersByPath returns at most 10 parameters per page.
PAGE_SIZE = 10

# Bounded timeouts and retries: a start-up that cannot reach SSM should fail
# within seconds with a clear error, not hang behind a load balancer check.
_CLIENT_CONFIG = Config(
    connect_timeout=5,
    read_timeout=10,
    retries={"mode": "standard", "max_attempts": 4},
)


def create_ssm_client() -> Any:
    """Build an SSM client from the standard AWS configuration chain."""
    try:
        # boto3's default session caches the loaded service models, so later
        # clients (another registry, each CLI run in tests) cost milliseconds.
        return boto3.client("ssm", config=_CLIENT_CONFIG)
    except BotoCoreError as error:
        raise BackendError(f"cannot create an SSM client: {error}") from None


class SsmBackend:
    """Parameters under ``/tinyllama/<env>/`` in SSM; SecureStrings use the account's KMS key."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def __repr__(self) -> str:
        return f"SsmBackend(endpoint={self.client.meta.endpoint_url!r})"

    def read(self, env: str, key: str) -> Parameter | None:
        """Return the decrypted parameter, or ``None`` when it is not set."""
        name = parameter_path(env=env, key=key)
        try:
            found = self.client.get_parameter(Name=name, WithDecryption=True)["Parameter"]
        except self.client.exceptions.ParameterNotFound:
            return None
        except (BotoCoreError, ClientError) as error:
            raise _backend_error("read", name, error) from None
        return _to_parameter(found, key=key)

    def read_prefix(self, env: str, prefix: str) -> list[Parameter]:
        """Return every decrypted parameter under ``prefix``: one paginated GetParametersByPath."""
        root = parameter_path(env=env, key="")
        path = root + prefix if prefix else root.rstrip("/")
        paginator = self.client.get_paginator("get_parameters_by_path")
        pages = paginator.paginate(
            Path=path,
            Recursive=True,
            WithDecryption=True,
            PaginationConfig={"PageSize": PAGE_SIZE},
        )
        found: list[Parameter] = []
        try:
            for page in pages:
                for item in page["Parameters"]:
                    key = item["Name"].removeprefix(root)
                    # Defensive: keep only whole-segment matches inside this environment.
                    if item["Name"].startswith(root) and is_under(key, prefix):
                        found.append(_to_parameter(item, key=key))
        except (BotoCoreError, ClientError) as error:
            raise _backend_error("list", path, error) from None
        return sorted(found, key=lambda parameter: parameter.key)

    def write(self, env: str, parameter: Parameter) -> None:
        """Create or overwrite a parameter as String or SecureString."""
        name = parameter_path(env=env, key=parameter.key)
        try:
            self.client.put_parameter(
                Name=name,
                Value=parameter.value,
                Type=parameter.type_name,
                Overwrite=True,
            )
        except (BotoCoreError, ClientError) as error:
            raise _backend_error("write", name, error, hide=parameter.value) from None

    def delete(self, env: str, key: str) -> bool:
        """Remove a parameter; return whether it existed."""
        name = parameter_path(env=env, key=key)
        try:
            self.client.delete_parameter(Name=name)
        except self.client.exceptions.ParameterNotFound:
            return False
        except (BotoCoreError, ClientError) as error:
            raise _backend_error("delete", name, error) from None
        return True


def _to_parameter(item: dict[str, Any], *, key: str) -> Parameter:
    return Parameter(key, item["Value"], secure=item["Type"] == SECURE_STRING)


def _backend_error(
    action: str, name: str, error: Exception, *, hide: str | None = None
) -> BackendError:
    if isinstance(error, ClientError):
        detail = error.response.get("Error", {})
        reason = f"{detail.get('Code', 'Error')}: {detail.get('Message', '')}".rstrip(": ")
    else:
        reason = str(error)
    # One line: the CLI prints it and services log it at start-up.
    reason = " ".join(reason.split())
    if hide and len(hide) > 3:
        # Validation errors may echo the rejected value back; it may be a secret.
        reason = reason.replace(" ".join(hide.split()), MASK)
    return BackendError(f"SSM {action} of {name} failed: {reason}")
