"""cdk-nag acknowledgments: each one names the finding and says why it is accepted."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct


def acknowledge(construct: IConstruct, rule_id: str, *, reason: str) -> None:
    """Accept finding ``rule_id`` (e.g. ``AwsSolutions-IAM5[Resource::*]``) on ``construct``."""
    if len(reason) < 20:
        raise ValueError(f"acknowledging {rule_id} needs a real reason, not {reason!r}")
    Validations.of(construct).acknowledge(Acknowledgment(id=rule_id, reason=reason))


def acknowledge_task_definition(task_definition: IConstruct) -> None:
    """The findings every service task definition of this stack accepts, with why."""
    acknowledge(
        task_definition,
        "AwsSolutions-ECS2",
        reason="only non-secret bootstrap values (environment name, registry "
        "backend); the Redis password comes from Secrets Manager as an ECS secret",
    )
    acknowledge(
        task_definition,
        "AwsSolutions-IAM5[Resource::*]",
        reason="ecr:GetAuthorizationToken has no resource-level permissions; "
        "cloudwatch:PutMetricData is limited by a namespace condition",
    )


def rendered(scope: IConstruct, value: str) -> str:
    """Render ``value`` the way cdk-nag names it in finding ids.

    Tokens become ``<AWS::AccountId>`` / ``<Logical.Attr>``, as in
    ``AwsSolutions-IAM5[Resource::arn:aws:ssm:us-east-1:<AWS::AccountId>:...]``.
    """
    return _render(Stack.of(scope).resolve(value))


def _render(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((fn, arg),) = value.items()
        if fn == "Ref":
            return f"<{arg}>"
        if fn == "Fn::GetAtt":
            return f"<{arg[0]}.{arg[1]}>"
        if fn == "Fn::Join":
            return str(arg[0]).join(_render(part) for part in arg[1])
    raise ValueError(f"cannot render {value!r} as a cdk-nag finding id")
