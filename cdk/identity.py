"""Identity: the Cognito user pool, its clients and the API's OAuth scopes."""

from __future__ import annotations

from aws_cdk import Aws, Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_cognito as cognito
from constructs import Construct

from cdk.nag import acknowledge

RESOURCE_SERVER_ID = "tinyllama"
INVOKE_SCOPE = "invoke"
ADMIN_SCOPE = "admin"


class Identity(Construct):
    """User pool with a public PKCE desktop client and a machine client.

    The desktop client has no secret (it runs on users' machines) and uses
    the authorization-code flow with PKCE. The machine client uses client
    credentials and may ask for ``tinyllama/invoke`` and ``tinyllama/admin``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        env_name: str,
        access_token_validity: Duration,
        id_token_validity: Duration,
        refresh_token_validity: Duration,
        callback_urls: list[str],
        mfa_required: bool,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.user_pool = cognito.UserPool(
            self,
            "UserPool",
            self_sign_up_enabled=False,  # the operator creates users
            sign_in_aliases=cognito.SignInAliases(email=True),
            auto_verify=cognito.AutoVerifiedAttrs(email=True),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            password_policy=cognito.PasswordPolicy(
                min_length=12,
                require_digits=True,
                require_lowercase=True,
                require_uppercase=True,
                require_symbols=True,
                temp_password_validity=Duration.days(3),
            ),
            mfa=cognito.Mfa.REQUIRED if mfa_required else cognito.Mfa.OPTIONAL,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            deletion_protection=removal_policy == RemovalPolicy.RETAIN,
            removal_policy=removal_policy,
        )
        acknowledge(
            self.user_pool,
            "AwsSolutions-COG8",
            reason="the Plus feature plan (threat protection) is billed per active user; "
            "users are few and operator-created, sign-up is disabled",
        )
        if not mfa_required:
            acknowledge(
                self.user_pool,
                "AwsSolutions-COG2",
                reason="non-production pool: MFA optional (TOTP offered); production "
                "requires it (mfa_required in cdk/config.py)",
            )
        self.invoke_scope = cognito.ResourceServerScope(
            scope_name=INVOKE_SCOPE, scope_description="Send prompts and read own jobs"
        )
        self.admin_scope = cognito.ResourceServerScope(
            scope_name=ADMIN_SCOPE, scope_description="Start/stop the GPU, budgets, usage"
        )
        self.resource_server = self.user_pool.add_resource_server(
            "Api", identifier=RESOURCE_SERVER_ID, scopes=[self.invoke_scope, self.admin_scope]
        )
        invoke = cognito.OAuthScope.resource_server(self.resource_server, self.invoke_scope)
        admin = cognito.OAuthScope.resource_server(self.resource_server, self.admin_scope)
        lifetimes = {
            "access_token_validity": access_token_validity,
            "id_token_validity": id_token_validity,
            "refresh_token_validity": refresh_token_validity,
        }

        self.desktop_client = self.user_pool.add_client(
            "DesktopClient",
            generate_secret=False,
            auth_flows=cognito.AuthFlow(user_srp=True),
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(authorization_code_grant=True),
                scopes=[cognito.OAuthScope.OPENID, cognito.OAuthScope.EMAIL, invoke],
                callback_urls=callback_urls,
                logout_urls=callback_urls,
            ),
            prevent_user_existence_errors=True,
            enable_token_revocation=True,
            **lifetimes,
        )
        self.machine_client = self.user_pool.add_client(
            "MachineClient",
            generate_secret=True,
            auth_flows=cognito.AuthFlow(),
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(client_credentials=True), scopes=[invoke, admin]
            ),
            prevent_user_existence_errors=True,
            enable_token_revocation=True,
            **lifetimes,
        )
        # Hosted domain: the token endpoint for client credentials and the
        # login page for the desktop app. The account id keeps it unique.
        self.domain = self.user_pool.add_domain(
            "Domain",
            cognito_domain=cognito.CognitoDomainOptions(
                domain_prefix=Fn.join("-", ["tinyllama", env_name, Aws.ACCOUNT_ID])
            ),
        )

    @property
    def issuer(self) -> str:
        """The ``iss`` of this pool's tokens (the ProviderURL attribute lacks the scheme)."""
        region = Stack.of(self).region
        return f"https://cognito-idp.{region}.amazonaws.com/{self.user_pool.user_pool_id}"

    @property
    def jwks_url(self) -> str:
        """Where the pool publishes its signing keys."""
        return Fn.join("", [self.issuer, "/.well-known/jwks.json"])

    @property
    def client_ids(self) -> list[str]:
        """Every app client whose tokens the gateway accepts."""
        return [self.desktop_client.user_pool_client_id, self.machine_client.user_pool_client_id]

    @property
    def invoke_scope_name(self) -> str:
        """The full invoke scope string every gateway caller's access token must carry."""
        return f"{RESOURCE_SERVER_ID}/{INVOKE_SCOPE}"

    @property
    def admin_scope_name(self) -> str:
        """The full admin scope string carried in access tokens."""
        return f"{RESOURCE_SERVER_ID}/{ADMIN_SCOPE}"
