"""CI deploy role: GitHub Actions (OIDC) may assume the CDK bootstrap roles only."""

from __future__ import annotations

from aws_cdk import Aws, Duration
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_iam as iam
from constructs import Construct

from cdk.nag import acknowledge, rendered
from cdk.registry import READ_ACTIONS, SsmRegistry, registry_arns
from services.registry.keys import RELEASE_PREFIX

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

    def allow_release_pipeline(
        self,
        *,
        registry: SsmRegistry,
        user_pool: cognito.IUserPool,
        promote_from: str | None,
    ) -> None:
        """What the deploy workflow does around ``cdk deploy``, and nothing more.

        Read this environment's registry (``export --format github``); write its
        ``release/*`` keys (the commit that passed); read the ``release/*`` keys of
        the environment it promotes from; read the machine client's secret for the
        smoke test's client-credentials token.
        """
        registry.grant_read(self.role)
        own_releases = registry_arns(self, env_name=registry.env_name, prefix=RELEASE_PREFIX)
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="RecordRelease",
                actions=["ssm:PutParameter"],
                resources=[own_releases[1]],
            )
        )
        wildcards = [own_releases[1]]
        if promote_from is not None:
            source = registry_arns(self, env_name=promote_from, prefix=RELEASE_PREFIX)
            self.role.add_to_policy(
                iam.PolicyStatement(
                    sid="ReadPromotedRelease", actions=list(READ_ACTIONS), resources=source
                )
            )
            wildcards.append(source[1])
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="SmokeTestToken",
                actions=["cognito-idp:DescribeUserPoolClient"],
                resources=[user_pool.user_pool_arn],
            )
        )
        for arn in wildcards:
            acknowledge(
                self.role,
                f"AwsSolutions-IAM5[Resource::{rendered(self, arn)}]",
                reason="the release keys the pipeline records and promotes "
                "(release/commit), under one environment's registry path",
            )
