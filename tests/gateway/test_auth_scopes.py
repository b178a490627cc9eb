"""Who may do what: the required invoke scope and the admin scope or configured groups."""

from __future__ import annotations

import dataclasses

from services.gateway.http.app import create_app
from tests.gateway.auth_support import signed

INVOKE = "tinyllama/invoke"
ADMIN = "tinyllama/admin"


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _client(aiohttp_client, settings, **changes):
    return await aiohttp_client(create_app(dataclasses.replace(settings, **changes)))


async def _assert_403(response, scope: str) -> None:
    assert response.status == 403, await response.text()
    challenge = response.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert f'scope="{scope}"' in challenge
    # /v1 answers OpenAI's error object; every other route a problem.
    v1 = response.url.path.startswith("/v1/")
    expected = "application/json" if v1 else "application/problem+json"
    assert response.headers["Content-Type"].startswith(expected)


async def test_cognito_group_named_admin_is_not_an_operator_by_default(gateway, signing_key, redis):
    """A Cognito group that happens to be called `admin` grants nothing unless configured."""
    token = signed(signing_key, cognito__groups=["admin"])
    await _assert_403(await gateway.post("/gpu/stop", headers=_auth(token)), ADMIN)
    usage = await gateway.get("/usage", headers=_auth(token))
    assert usage.status == 200
    assert "subjects" not in await usage.json()


async def test_configured_admin_group_opens_operator_routes(
    aiohttp_client, gateway_settings, signing_key, redis
):
    """TINYLLAMA_ADMIN_GROUPS names the groups that are operators; other groups are not."""
    client = await _client(aiohttp_client, gateway_settings, admin_groups=("ops-team",))
    operator = signed(signing_key, cognito__groups=["ops-team"])
    usage = await client.get("/usage", headers=_auth(operator))
    assert usage.status == 200
    assert "subjects" in await usage.json()
    # Past the admin check: this deployment has no fleet to stop (409), not a 403.
    assert (await client.post("/gpu/stop", headers=_auth(operator))).status == 409
    bystander = signed(signing_key, cognito__groups=["admin"])
    await _assert_403(await client.post("/gpu/stop", headers=_auth(bystander)), ADMIN)


async def test_required_scope_is_403_on_every_authenticated_route_without_it(
    aiohttp_client, gateway_settings, signing_key, redis
):
    """With TINYLLAMA_REQUIRED_SCOPE set, a valid token without it is 403 insufficient_scope."""
    client = await _client(aiohttp_client, gateway_settings, required_scope=INVOKE)
    bare = _auth(signed(signing_key, scope=""))
    await _assert_403(
        await client.post("/infer?mode=async", json={"prompt": "hi"}, headers=bare), INVOKE
    )
    await _assert_403(await client.get("/gpu", headers=bare), INVOKE)
    await _assert_403(await client.get("/usage", headers=bare), INVOKE)
    await _assert_403(await client.get("/v1/models", headers=bare), INVOKE)


async def test_required_scope_or_admin_scope_is_admitted(
    aiohttp_client, gateway_settings, signing_key, redis
):
    """The invoke scope admits a caller; the admin scope does too (operators may invoke)."""
    client = await _client(aiohttp_client, gateway_settings, required_scope=INVOKE)
    for scope in (INVOKE, f"openid {INVOKE}", ADMIN):
        headers = _auth(signed(signing_key, scope=scope))
        for path in ("/gpu", "/usage", "/v1/models"):
            response = await client.get(path, headers=headers)
            assert response.status == 200, (scope, path, await response.text())


def test_admin_groups_and_required_scope_are_read_from_the_environment():
    """TINYLLAMA_ADMIN_GROUPS (comma list) and TINYLLAMA_REQUIRED_SCOPE reach the settings."""
    from services.gateway.settings import load_settings

    base = {"TINYLLAMA_JWKS_URL": "file:///dev/null"}
    defaults = load_settings(base)
    assert (defaults.admin_groups, defaults.required_scope) == ((), "")
    settings = load_settings(
        {**base, "TINYLLAMA_ADMIN_GROUPS": "ops, sre", "TINYLLAMA_REQUIRED_SCOPE": INVOKE}
    )
    assert settings.admin_groups == ("ops", "sre")
    assert settings.required_scope == INVOKE
