"""A real OAuth 2.0 authorization server on loopback, built from authlib's server parts.

Shaped like Cognito's hosted UI: ``/oauth2/authorize`` (PKCE S256 required; the user is
already signed in, so it redirects at once), ``/oauth2/token`` (code, refresh and client
credentials grants), ``/oauth2/revoke``. Access tokens are RS256 JWTs with Cognito's
claims, signed with the key whose JWKS the test gateway trusts.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import InvalidRequestError, OAuth2Error, grants
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from flask import Flask
from werkzeug.serving import make_server

from services.devstack.identity import mint_token

USER = "alice"
ACCESS_TTL_S = 300


@dataclasses.dataclass
class Client:
    """A registered app client (public desktop client or confidential machine client)."""

    client_id: str
    redirect_uris: tuple[str, ...] = ()
    secret: str = ""
    scopes: tuple[str, ...] = ("openid", "tinyllama/invoke")

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope):
        return " ".join(s for s in (scope or "").split() if s in self.scopes)

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri in self.redirect_uris  # exact match, as Cognito

    def check_client_secret(self, client_secret):
        return bool(self.secret) and secrets.compare_digest(client_secret, self.secret)

    def check_endpoint_auth_method(self, method, endpoint):
        return method == ("client_secret_basic" if self.secret else "none")

    def check_response_type(self, response_type):
        return response_type == "code" and not self.secret

    def check_grant_type(self, grant_type):
        allowed = {"client_credentials"} if self.secret else {"authorization_code", "refresh_token"}
        return grant_type in allowed


@dataclasses.dataclass
class Code:
    """An issued authorization code with its PKCE challenge."""

    code: str
    client_id: str
    redirect_uri: str
    scope: str
    code_challenge: str
    code_challenge_method: str

    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope


@dataclasses.dataclass
class Refresh:
    """A refresh token, until revoked."""

    token: str
    client_id: str
    scope: str
    revoked: bool = False

    def get_scope(self):
        return self.scope

    def check_client(self, client):
        return client.client_id == self.client_id

    def is_expired(self):
        return False

    def is_revoked(self):
        return self.revoked

    def get_user(self):
        return USER


class S256Only(CodeChallenge):
    """PKCE required, and only S256 (Cognito refuses ``plain`` too)."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant, redirect_uri):
        """Refuse at the authorize step already (authlib alone waits for the token step)."""
        data = grant.request.payload.data
        if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE with S256 is required")
        super().validate_code_challenge(grant, redirect_uri)


class AuthServer:
    """The authorization server, served by werkzeug in a thread."""

    def __init__(self, key, *, issuer: str, audience_client_id: str) -> None:
        self.key = key
        self.issuer = issuer
        self.audience_client_id = audience_client_id  # the client_id the gateway trusts
        self.clients: dict[str, Client] = {}
        self.codes: dict[str, Code] = {}
        self.refresh_tokens: dict[str, Refresh] = {}
        self.grants: list[str] = []  # grant types issued, in order
        self.app = self._build()
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(5)

    def _token(self, grant_type, client, user=None, scope=None, expires_in=None,
               include_refresh_token=True):  # fmt: skip
        self.grants.append(grant_type)
        subject = user or client.client_id
        access = mint_token(
            self.key,
            subject=subject,
            scopes=tuple((scope or "").split()),
            ttl_s=ACCESS_TTL_S,
            issuer=self.issuer,
            client_id=self.audience_client_id,
            now=time.time(),
        )
        token = {"token_type": "Bearer", "access_token": access, "expires_in": ACCESS_TTL_S}
        if include_refresh_token and grant_type == "authorization_code":
            refresh = secrets.token_urlsafe(24)
            self.refresh_tokens[refresh] = Refresh(refresh, client.client_id, scope or "")
            token["refresh_token"] = refresh
        return token

    def _build(self) -> Flask:
        app = Flask("test-auth-server")
        server = AuthorizationServer(
            app, query_client=self.clients.get, save_token=lambda t, r: None
        )
        server.register_token_generator("default", self._token)
        outer = self

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["none"]

            def save_authorization_code(self, code, request):
                outer.codes[code] = Code(
                    code=code,
                    client_id=request.client.client_id,
                    redirect_uri=request.payload.redirect_uri,
                    scope=request.scope,
                    code_challenge=request.payload.data["code_challenge"],
                    code_challenge_method=request.payload.data["code_challenge_method"],
                )

            def query_authorization_code(self, code, client):
                found = outer.codes.get(code)
                return found if found and found.client_id == client.client_id else None

            def delete_authorization_code(self, authorization_code):
                outer.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code):
                return USER

        class RefreshGrant(grants.RefreshTokenGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["none"]
            INCLUDE_NEW_REFRESH_TOKEN = False  # Cognito keeps the refresh token

            def authenticate_refresh_token(self, refresh_token):
                found = outer.refresh_tokens.get(refresh_token)
                return found if found and not found.revoked else None

            def authenticate_user(self, credential):
                return USER

            def revoke_old_credential(self, refresh_token):
                """Cognito keeps a refresh token valid across refreshes."""

        class Revocation(RevocationEndpoint):
            CLIENT_AUTH_METHODS = ["none"]

            def query_token(self, token_string, token_type_hint):
                return outer.refresh_tokens.get(token_string)

            def revoke_token(self, token, request):
                token.revoked = True

        server.register_grant(CodeGrant, [S256Only(required=True)])
        server.register_grant(RefreshGrant)
        server.register_grant(grants.ClientCredentialsGrant)
        server.register_endpoint(Revocation)

        @app.get("/oauth2/authorize")
        def authorize():
            try:
                grant = server.get_consent_grant(end_user=USER)
            except OAuth2Error as error:
                return {"error": error.error, "error_description": error.description}, 400
            return server.create_authorization_response(grant_user=USER, grant=grant)

        @app.post("/oauth2/token")
        def token():
            return server.create_token_response()

        @app.post("/oauth2/revoke")
        def revoke():
            return server.create_endpoint_response("revocation")

        return app
