"""Registry: SSM parameters under ``/tinyllama/<env>/`` and read grants on them."""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from cdk.nag import acknowledge, rendered
from services.registry.keys import ALL_KEYS, parameter_path

READ_ACTIONS = ("ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath")


class SsmRegistry(Construct):
    """Writes the environment's registry and grants read access to exactly it."""

    def __init__(self, scope: Construct, construct_id: str, *, env_name: str) -> None:
        super().__init__(scope, construct_id)
        self.env_name = env_name
        self.path = parameter_path(env=env_name, key="").rstrip("/")
        self.parameters: dict[str, ssm.StringParameter] = {}

    def put(self, key: str, value: str, *, description: str | None = None) -> ssm.StringParameter:
        """Write ``value`` under ``/tinyllama/<env>/<key>``; ``key`` must be a known key."""
        if key not in ALL_KEYS:
            raise KeyError(f"{key!r} is not in services.registry.keys.ALL_KEYS")
        if key in self.parameters:
            raise KeyError(f"registry key {key!r} written twice")
        parameter = ssm.StringParameter(
            self,
            key.replace("/", "-"),
            parameter_name=parameter_path(env=self.env_name, key=key),
            string_value=value,
            description=description or f"TinyLlama {self.env_name} registry: {key}",
            tier=ssm.ParameterTier.STANDARD,
        )
        self.parameters[key] = parameter
        return parameter

    def arns(self) -> list[str]:
        """Return the ARNs a reader needs: the path itself and everything below it."""
        return registry_arns(self, env_name=self.env_name)

    def grant_read(self, grantee: iam.IGrantable) -> iam.Grant:
        """Allow ``grantee`` to read (only) this environment's parameters."""
        arns = self.arns()
        grant = iam.Grant.add_to_principal(
            grantee=grantee, actions=list(READ_ACTIONS), resource_arns=arns
        )
        if isinstance(grantee, Construct):
            acknowledge(
                grantee,
                f"AwsSolutions-IAM5[Resource::{rendered(self, arns[1])}]",
                reason=f"reads exactly this environment's registry subtree {self.path}/ "
                "(parameter names are not known to the reader in advance)",
            )
        return grant


def registry_arns(scope: Construct, *, env_name: str, prefix: str = "") -> list[str]:
    """The ARNs of ``/tinyllama/<env>[/<prefix>]`` and of everything below it."""
    name = parameter_path(env=env_name, key=prefix).strip("/")
    stack = Stack.of(scope)
    return [
        stack.format_arn(
            service="ssm",
            resource="parameter",
            resource_name=resource_name,
            arn_format=ArnFormat.SLASH_RESOURCE_NAME,
        )
        for resource_name in (name, f"{name}/*")
    ]
