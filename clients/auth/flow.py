"""The OAuth 2.0 flows, on authlib: code + PKCE over a loopback redirect, refresh, revoke.

The hosted UI is opened through ``open_browser`` (``webbrowser.open`` by default; tests
pass a function that follows the redirects itself).
"""

from __future__ import annotations

import http.server
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from clients.auth.config import LoginConfig, LoginError
from clients.auth.store import Tokens, TokenStore

# authlib is imported on first use: only signing in needs it. `tinyllama token` must run
# where the login extras are not installed (the gateway image mints dev tokens with it).


def oauth_session(*args: Any, **kwargs: Any) -> Any:
    """authlib's requests-based OAuth 2.0 session."""
    from authlib.integrations.requests_client import OAuth2Session as Session

    return Session(*args, **kwargs)


def generate_token(length: int) -> str:
    """A random URL-safe string (authlib's, as its PKCE helpers expect)."""
    from authlib.common.security import generate_token as generate

    return generate(length)


def refused() -> tuple[type[Exception], ...]:
    """What authlib's core and its requests client raise for a refused grant."""
    from authlib.integrations.base_client import OAuthError
    from authlib.oauth2.rfc6749.errors import OAuth2Error

    return (OAuth2Error, OAuthError)


REFRESH_LEEWAY_S = 60.0  # refresh this long before the access token expires
PAGE = b"<html><body><h1>tinyllama: logged in</h1>You can close this window.</body></html>"


class _Callback(http.server.BaseHTTPRequestHandler):
    """Answers the one redirect back from the hosted UI and keeps its query."""

    def do_GET(self) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        if parsed.path != "/callback":
            self.send_error(404)
            return
        self.server.query = dict(urllib.parse.parse_qsl(parsed.query))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the query holds the authorization code."""


def _listen(port: int) -> http.server.HTTPServer:
    try:
        server = http.server.HTTPServer(("127.0.0.1", port), _Callback)
    except OSError as exc:
        raise LoginError(
            f"port {port} on this machine is busy ({exc.strerror}), and login needs it: "
            f"the identity provider only redirects to http://localhost:{port}/callback. "
            "Close whatever holds it (another `tinyllama login`, the desktop app's login) "
            "and try again."
        ) from None
    server.query = None  # type: ignore[attr-defined]
    return server


def _tokens(token: Mapping[str, Any], *, kind: str, env: str, refresh_token: str = "") -> Tokens:
    expires_at = float(token.get("expires_at") or time.time() + float(token["expires_in"]))
    return Tokens(
        access_token=token["access_token"],
        refresh_token=token.get("refresh_token") or refresh_token,
        expires_at=expires_at,
        kind=kind,
        env=env,
    )


def login_pkce(
    config: LoginConfig,
    *,
    env: str,
    open_browser: Callable[[str], object],
    timeout_s: float = 300.0,
) -> Tokens:
    """Authorization code + PKCE (S256) through the hosted UI; a public client, no secret."""
    server = _listen(config.redirect_port)
    waiter = threading.Thread(target=_serve_until_callback, args=(server, timeout_s), daemon=True)
    waiter.start()
    try:
        session = oauth_session(
            config.client_id,
            scope=" ".join(config.scopes),
            redirect_uri=config.redirect_uri,
            code_challenge_method="S256",
        )
        verifier = generate_token(64)
        url, state = session.create_authorization_url(config.authorize_url, code_verifier=verifier)
        open_browser(url)
        waiter.join(timeout_s)
        query = server.query  # type: ignore[attr-defined]
    finally:
        server.server_close()
    if query is None:
        raise LoginError(f"no answer from the browser within {timeout_s:.0f} s")
    if "error" in query:
        raise LoginError(f"login refused: {query['error']} {query.get('error_description', '')}")
    if query.get("state") != state:
        raise LoginError("login answer does not match this login (state differs): try again")
    try:
        token = session.fetch_token(config.token_url, code=query["code"], code_verifier=verifier)
    except refused() as exc:
        raise LoginError(f"the token endpoint refused the code: {exc.error}") from None
    return _tokens(token, kind="cognito", env=env)


def _serve_until_callback(server: http.server.HTTPServer, timeout_s: float) -> None:
    server.timeout = 0.2
    deadline = time.monotonic() + timeout_s
    while server.query is None and time.monotonic() < deadline:  # type: ignore[attr-defined]
        server.handle_request()


def refresh(config: LoginConfig, tokens: Tokens) -> Tokens:
    """New access token from the refresh token (Cognito keeps the refresh token the same)."""
    if not tokens.refresh_token:
        raise LoginError("this login cannot refresh itself: run `tinyllama login` again")
    session = oauth_session(config.client_id, scope=" ".join(config.scopes))
    try:
        token = session.refresh_token(config.token_url, refresh_token=tokens.refresh_token)
    except refused() as exc:
        raise LoginError(f"login expired ({exc.error}): run `tinyllama login` again") from None
    return _tokens(token, kind=tokens.kind, env=tokens.env, refresh_token=tokens.refresh_token)


def login_machine(config: LoginConfig, *, env: str) -> Tokens:
    """Client credentials for a machine client (``TINYLLAMA_CLIENT_SECRET``)."""
    if not (config.machine_client_id and config.client_secret):
        raise LoginError(
            "machine login needs TINYLLAMA_COGNITO_MACHINE_CLIENT_ID and TINYLLAMA_CLIENT_SECRET"
        )
    session = oauth_session(
        config.machine_client_id,
        config.client_secret,
        scope=" ".join(s for s in config.scopes if s != "openid"),
    )
    try:
        token = session.fetch_token(config.token_url, grant_type="client_credentials")
    except refused() as exc:
        raise LoginError(f"the token endpoint refused the client: {exc.error}") from None
    return _tokens(token, kind="machine", env=env)


def login_dev(*, subject: str, env: str = "local", ttl_s: int = 12 * 3600) -> Tokens:
    """Locally: a dev token signed by the dev stack's key (``services.devstack.identity``)."""
    from services.devstack.identity import default_keys_dir, ensure_dev_key, mint_token

    key = ensure_dev_key(default_keys_dir())
    token = mint_token(key, subject=subject, scopes=("tinyllama/invoke",), ttl_s=ttl_s)
    return Tokens(access_token=token, expires_at=time.time() + ttl_s, kind="dev", env=env)


def logout(config: LoginConfig | None, store: TokenStore) -> bool:
    """Revoke the refresh token at the provider (if any), then forget the login."""
    tokens = store.load()
    store.clear()
    if tokens is None or not tokens.refresh_token or config is None:
        return tokens is not None
    session = oauth_session(config.client_id)
    response = session.revoke_token(
        config.revoke_url, tokens.refresh_token, token_type_hint="refresh_token"
    )
    if response.status_code != 200:
        raise LoginError(f"forgot the login, but revocation failed: HTTP {response.status_code}")
    return True


def current_token(
    store: TokenStore, config: LoginConfig | None, *, now: float | None = None
) -> str | None:
    """The stored access token, refreshed first when it expires within a minute."""
    tokens = store.load()
    if tokens is None:
        return None
    if (now or time.time()) + REFRESH_LEEWAY_S >= tokens.expires_at:
        if tokens.kind == "machine" and config is not None:
            tokens = login_machine(config, env=tokens.env)
        elif tokens.refresh_token and config is not None:
            tokens = refresh(config, tokens)
        else:
            raise LoginError("your login has expired: run `tinyllama login`")
        store.save(tokens)
    return tokens.access_token
