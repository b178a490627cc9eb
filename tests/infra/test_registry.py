"""SsmRegistry: writes under /tinyllama/<env>/ and grants read on exactly that path."""

from __future__ import annotations

from collections.abc import Callable

import aws_cdk as cdk
import pytest
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Template

from cdk.registry import READ_ACTIONS, SsmRegistry
from services.registry import keys
from tests.infra.helpers import flatten, identity_statements


def test_put_writes_under_env_path(bare_stack: Callable[[], cdk.Stack]) -> None:
    """A key lands at /tinyllama/<env>/<key>, the name services read."""
    stack = bare_stack()
    SsmRegistry(stack, "Reg", env_name="qa").put(keys.QUEUE_NAME, "arq:queue")
    Template.from_stack(stack).has_resource_properties(
        "AWS::SSM::Parameter", {"Name": "/tinyllama/qa/queue/name", "Value": "arq:queue"}
    )


def test_put_rejects_unknown_keys(bare_stack: Callable[[], cdk.Stack]) -> None:
    """Only names from services/registry/keys.py can be written (no string drift)."""
    registry = SsmRegistry(bare_stack(), "Reg", env_name="qa")
    with pytest.raises(KeyError):
        registry.put("not/a-key", "x")


def test_grant_read_is_limited_to_env_path(bare_stack: Callable[[], cdk.Stack]) -> None:
    """grant_read allows only SSM reads, only on the env's path and below it."""
    stack = bare_stack()
    registry = SsmRegistry(stack, "Reg", env_name="qa")
    role = iam.Role(stack, "Reader", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"))
    registry.grant_read(role)
    statements = [s for _, s in identity_statements(Template.from_stack(stack).to_json())]
    assert len(statements) == 1
    (statement,) = statements
    assert sorted(statement["Action"]) == sorted(READ_ACTIONS)
    assert [flatten(r) for r in statement["Resource"]] == [
        "arn:aws:ssm:us-east-1:<AWS::AccountId>:parameter/tinyllama/qa",
        "arn:aws:ssm:us-east-1:<AWS::AccountId>:parameter/tinyllama/qa/*",
    ]
