"""CI deploy role: GitHub Actions (OIDC) may assume the CDK bootstrap roles only."""

from __future__ import annotations

from aws_cdk import Aws, Duration
from aws_cdk import aws_iam as iam
from constructs import Construct

from cdk.nag import acknowledge, rendered

GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
BOOTSTRAP_ROLE_KINDS = ("deploy", "file-publishing", "image-publishing", "lookup")


class DeployRole(Construct):
    """A role GitHub Actions of one repository assumes to run ``cdk deploy``.

    It can do nothing but assume this account's CDK bootstrap roles, which
    hold the real deploy permissions (the standard least-privilege pattern).
    The OIDC provider is per account: exactly one stack in an account creates
    it, the others import it by ARN.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        github_repo: str,
        github_environment: str | None,
        create_provider: bool,
        bootstrap_qualifier: str,
    ) -> None:
        super().__init__(scope, construct_id)
        if create_provider:
            provider: iam.IOidcProvider = iam.OidcProviderNative(
                self,
                "GitHubOidc",
                url=f"https://{GITHUB_OIDC_HOST}",
                client_ids=["sts.amazonaws.com"],
            )
        else:
            provider = iam.OidcProviderNative.from_oidc_provider_arn(
                self,
                "GitHubOidc",
                f"arn:{Aws.PARTITION}:iam::{Aws.ACCOUNT_ID}:oidc-provider/{GITHUB_OIDC_HOST}",
            )
        self.provider = provider
        ref = f"environment:{github_environment}" if github_environment else "ref:refs/heads/main"
        self.subject = f"repo:{github_repo}:{ref}"
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.WebIdentityPrincipal(
                provider.oidc_provider_arn,
                conditions={
                    "StringEquals": {
                        f"{GITHUB_OIDC_HOST}:aud": "sts.amazonaws.com",
                        f"{GITHUB_OIDC_HOST}:sub": self.subject,
                    }
                },
            ),
            description=f"GitHub Actions deploys from {self.subject}",
            max_session_duration=Duration.hours(1),
        )
        bootstrap_roles = (
            f"arn:{Aws.PARTITION}:iam::{Aws.ACCOUNT_ID}:role/"
            f"cdk-{bootstrap_qualifier}-*-{Aws.ACCOUNT_ID}-{Aws.REGION}"
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="AssumeCdkBootstrapRoles",
                actions=["sts:AssumeRole", "sts:TagSession"],
                resources=[bootstrap_roles],
                conditions={
                    "StringEquals": {
                        "iam:ResourceTag/aws-cdk:bootstrap-role": list(BOOTSTRAP_ROLE_KINDS)
                    }
                },
            )
        )
        acknowledge(
            self.role,
            f"AwsSolutions-IAM5[Resource::{rendered(self, bootstrap_roles)}]",
            reason="the CDK bootstrap roles of this account and region "
            "(deploy, file/image publishing, lookup), also pinned by their bootstrap tag",
        )
