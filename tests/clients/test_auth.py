"""Login against a real authorization server: PKCE, refresh, revocation, storage."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import stat
import time

import msgspec
import pytest
import requests

from clients.auth import (
    FileStore,
    LoginError,
    Tokens,
    current_token,
    load_login_config,
    login_machine,
    login_pkce,
)
from clients.auth import logout as forget
from tests.clients.conftest import follow_redirects


def _payload(token: str) -> dict:
    """The JWT's claims, unverified (the gateway does the verifying)."""
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


async def test_pkce_login_gives_an_access_token_the_gateway_accepts(
    aiohttp_client, gateway_settings, redis, login_config
):
    """Code + PKCE through a followed redirect: a Cognito-shaped token that passes the gateway."""
    from services.gateway.http.app import create_app

    tokens = await asyncio.to_thread(
        login_pkce, login_config, env="test", open_browser=follow_redirects, timeout_s=10
    )
    claims = _payload(tokens.access_token)
    assert claims["token_use"] == "access"
    assert "tinyllama/invoke" in claims["scope"].split()
    assert claims["sub"] == "alice"
    assert tokens.refresh_token
    settings = dataclasses.replace(gateway_settings, required_scope="tinyllama/invoke")
    gateway = await aiohttp_client(create_app(settings))
    answer = await gateway.get("/usage", headers={"Authorization": f"Bearer {tokens.access_token}"})
    assert answer.status == 200
    assert (await answer.json())["subject"] == "alice"


def test_authorize_refuses_a_request_without_pkce(auth_server, login_config):
    """The test server, like Cognito for this client, requires an S256 code challenge."""
    query = {
        "response_type": "code",
        "client_id": "desktop",
        "redirect_uri": login_config.redirect_uri,
        "scope": "openid",
    }
    answer = requests.get(
        login_config.authorize_url, params=query, allow_redirects=False, timeout=10
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_request"
    assert auth_server.codes == {}


def test_login_says_plainly_when_the_redirect_port_is_busy(login_config, busy_port):
    """A taken loopback port is a LoginError naming the port, before any browser opens."""
    opened: list[str] = []
    with pytest.raises(LoginError, match=f"port {busy_port} .*busy"):
        login_pkce(login_config, env="test", open_browser=opened.append, timeout_s=1)
    assert opened == []


def test_a_token_near_expiry_is_refreshed_and_stored(auth_server, login_config, tmp_path):
    """current_token refreshes a token expiring within a minute, keeping the refresh token."""
    store = FileStore(tmp_path / "tokens.json")
    tokens = login_pkce(login_config, env="test", open_browser=follow_redirects, timeout_s=10)
    store.save(msgspec.structs.replace(tokens, expires_at=time.time() + 30))
    fresh = current_token(store, login_config)
    assert fresh != tokens.access_token
    assert auth_server.grants[-1] == "refresh_token"
    saved = store.load()
    assert saved.refresh_token == tokens.refresh_token
    assert saved.expires_at > time.time() + 200
    assert current_token(store, login_config) == fresh  # still fresh: no second refresh


def test_logout_revokes_the_refresh_token_and_forgets_the_login(login_config, tmp_path):
    """After logout the store is empty and the provider refuses the old refresh token."""
    store = FileStore(tmp_path / "tokens.json")
    tokens = login_pkce(login_config, env="test", open_browser=follow_redirects, timeout_s=10)
    store.save(msgspec.structs.replace(tokens, expires_at=0.0))
    assert forget(login_config, store) is True
    assert store.load() is None
    store.save(msgspec.structs.replace(tokens, expires_at=0.0))
    with pytest.raises(LoginError, match="run `tinyllama login` again"):
        current_token(store, login_config)


def test_machine_client_logs_in_with_client_credentials(login_config):
    """A machine client gets an access token with client credentials, its own id as subject."""
    tokens = login_machine(login_config, env="test")
    assert tokens.kind == "machine"
    assert _payload(tokens.access_token)["sub"] == "machine"


def test_token_file_is_private_and_tokens_never_show_in_repr(tmp_path):
    """The fallback file is mode 0600; repr(Tokens) holds no token."""
    store = FileStore(tmp_path / "cfg" / "tokens.json")
    tokens = Tokens(access_token="secret-access", refresh_token="secret-refresh", expires_at=1.0)
    store.save(tokens)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.load() == tokens
    assert "secret" not in repr(tokens)


def test_login_settings_come_from_the_registry_export_before_the_config_file(tmp_path):
    """TINYLLAMA_COGNITO_* variables win over config.json; the file fills what they lack."""
    (tmp_path / "config.json").write_text(
        json.dumps({"login": {"domain": "file.example", "client_id": "from-file"}})
    )
    from_file = load_login_config({"TINYLLAMA_CONFIG_DIR": str(tmp_path)})
    assert from_file.authorize_url == "https://file.example/oauth2/authorize"
    assert from_file.client_id == "from-file"
    assert "tinyllama/invoke" in from_file.scopes
    assert from_file.redirect_uri == "http://localhost:8765/callback"
    exported = load_login_config(
        {"TINYLLAMA_CONFIG_DIR": str(tmp_path), "TINYLLAMA_COGNITO_DESKTOP_CLIENT_ID": "env-id"}
    )
    assert exported.client_id == "env-id"
    assert exported.revoke_url == "https://file.example/oauth2/revoke"
