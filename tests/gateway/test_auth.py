"""Bearer JWT checks at the HTTP edge, with a JWKS fetched over real HTTP."""

from __future__ import annotations

import time

import pytest

from tests.gateway.auth_support import access_claims, forge, signed
from tests.support import new_rsa_key

BODY = {"prompt": "hello"}


async def _post(gateway, token: str | None, *, headers: dict | None = None):
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    return await gateway.post("/infer?mode=async", json=BODY, headers=all_headers)


async def _assert_401(response) -> dict:
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    assert response.headers["Content-Type"].startswith("application/problem+json")
    return await response.json()


async def test_missing_token_is_401_with_challenge(gateway):
    """No Authorization header: 401, Bearer challenge, problem+json."""
    body = await _assert_401(await _post(gateway, None))
    assert body["status"] == 401
    assert "missing" in body["detail"]


async def test_non_bearer_scheme_is_401(gateway):
    """Basic auth (or any non-Bearer scheme) is refused with 401."""
    response = await gateway.post("/infer", json=BODY, headers={"Authorization": "Basic abc"})
    await _assert_401(response)


async def test_garbage_token_is_401_not_500(gateway):
    """A token that is not a JWT at all is a 401, never a 500."""
    for junk in ("abc", "a.b.c", "x" * 5000, "eyJhbGciOiJub25lIn0.e30."):
        await _assert_401(await _post(gateway, junk))


async def test_hostile_header_and_claim_types_are_401_not_500(gateway, signing_key):
    """Over a real socket: a list or object kid, exp=10**400, a dict group: 401 problem+json."""
    hostile = [
        forge({"alg": "RS256", "kid": ["test-key-1"]}, access_claims(), signing_key),
        forge({"alg": "RS256", "kid": {"k": 1}}, access_claims(), None),
        forge(["alg"], access_claims(), None),
        signed(signing_key, exp=10**400),
        signed(signing_key, cognito__groups=[{"admin": True}]),
    ]
    for token in hostile:
        body = await _assert_401(await _post(gateway, token))
        assert body["status"] == 401


async def test_bad_signature_is_401(gateway, make_token):
    """A token signed by a key the JWKS does not hold (same kid) is rejected."""
    forged = make_token(key=new_rsa_key("test-key-1"))
    body = await _assert_401(await _post(gateway, forged))
    assert "rejected" in body["detail"]


async def test_expired_token_is_401(gateway, make_token):
    """A token past exp (beyond the leeway) is rejected."""
    old = make_token(now=time.time() - 7200, ttl_s=600)
    body = await _assert_401(await _post(gateway, old))
    assert "exp" in body["detail"] or "expired" in body["detail"]


async def test_wrong_issuer_is_401(gateway, make_token):
    """A token from another issuer is rejected even if the key is trusted."""
    body = await _assert_401(await _post(gateway, make_token(issuer="https://evil.test")))
    assert "iss" in body["detail"]


async def test_wrong_client_id_is_401(gateway, make_token):
    """An access token for a client not on the allow-list is rejected."""
    await _assert_401(await _post(gateway, make_token(client_id="someone-else")))


async def test_valid_token_is_accepted(gateway, make_token):
    """A good token passes auth (202 in async mode: the job is queued)."""
    response = await _post(gateway, make_token())
    assert response.status == 202, await response.text()
    assert (await response.json())["status"] == "queued"


async def test_unknown_kid_refetches_at_most_once_per_interval(gateway, make_token, jwks_server):
    """A flood of unknown kids costs at most one JWKS fetch per interval."""
    before = jwks_server.fetches
    stranger = new_rsa_key("rotated-in-later")
    for _ in range(20):
        await _assert_401(await _post(gateway, make_token(key=stranger)))
    assert jwks_server.fetches - before <= 1


async def test_rotated_key_is_picked_up_on_unknown_kid(
    aiohttp_client, gateway_settings, jwks_server, make_token, redis
):
    """A key added to the JWKS after start is fetched when a token names its kid."""
    import dataclasses

    from services.gateway.http.app import create_app

    settings = dataclasses.replace(gateway_settings, jwks_unknown_kid_interval_s=0.0)
    client = await aiohttp_client(create_app(settings))
    rotated = new_rsa_key("rotated")
    jwks_server.keys.append(rotated)
    response = await _post(client, make_token(key=rotated))
    assert response.status == 202


async def test_cached_keys_survive_jwks_outage(gateway, make_token, jwks_server):
    """When the JWKS endpoint goes down, already-fetched keys keep working."""
    assert (await _post(gateway, make_token("bob"))).status == 202
    jwks_server.down = True
    response = await _post(gateway, make_token("carol"))
    assert response.status == 202


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "bearer\t"])
async def test_empty_bearer_is_401(gateway, header):
    """'Bearer' with nothing after it is a malformed request, 401."""
    await _assert_401(await gateway.post("/infer", json=BODY, headers={"Authorization": header}))


def _id_token(key, *, aud: str, subject: str = "ida", groups: list[str] | None = None) -> str:
    from joserfc import jwt

    now = int(time.time())
    claims = {
        "sub": subject,
        "iss": "https://issuer.test/pool",
        "aud": aud,
        "token_use": "id",
        "iat": now,
        "exp": now + 600,
    }
    if groups is not None:
        claims["cognito:groups"] = groups
    return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)


async def test_id_tokens_are_refused_unless_enabled(gateway, signing_key):
    """A Cognito ID token is refused by default (access tokens only)."""
    body = await _assert_401(await _post(gateway, _id_token(signing_key, aud="test-client")))
    assert "token_use" in body["detail"]


async def test_id_tokens_need_an_allowed_audience(
    aiohttp_client, gateway_settings, signing_key, redis
):
    """With ID tokens enabled, `aud` must be in the allowed list."""
    import dataclasses

    from services.gateway.http.app import create_app

    settings = dataclasses.replace(
        gateway_settings, allow_id_tokens=True, jwt_audiences=("desktop-app",)
    )
    client = await aiohttp_client(create_app(settings))
    assert (await _post(client, _id_token(signing_key, aud="desktop-app"))).status == 202
    await _assert_401(await _post(client, _id_token(signing_key, aud="other-app")))


async def test_admin_routes_need_the_admin_scope(gateway, make_token):
    """Operator routes answer 403 with insufficient_scope to a valid token without the scope."""
    response = await gateway.post("/gpu/stop", headers={"Authorization": f"Bearer {make_token()}"})
    assert response.status == 403
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


async def test_admin_scope_or_a_configured_cognito_group_grants_operator_routes(
    aiohttp_client, gateway_settings, make_token, signing_key, redis
):
    """The admin scope, or a Cognito group listed in admin_groups, opens operator routes."""
    import dataclasses

    from services.gateway.http.app import create_app

    settings = dataclasses.replace(
        gateway_settings,
        allow_id_tokens=True,
        jwt_audiences=("desktop-app",),
        admin_groups=("admin",),
    )
    client = await aiohttp_client(create_app(settings))
    scoped = make_token("ops", scopes=("tinyllama/admin",))
    grouped = _id_token(signing_key, aud="desktop-app", groups=["admin"])
    for token in (scoped, grouped):
        response = await client.get("/usage", headers={"Authorization": f"Bearer {token}"})
        assert response.status == 200
        assert "subjects" in await response.json()


async def test_jwks_is_refreshed_on_a_timer(
    aiohttp_client, gateway_settings, jwks_server, make_token, redis
):
    """A key published later is picked up by the periodic refresh, not only on unknown kids."""
    import asyncio
    import dataclasses

    from services.gateway.http.app import create_app

    settings = dataclasses.replace(
        gateway_settings, jwks_refresh_s=0.2, jwks_unknown_kid_interval_s=3600.0
    )
    client = await aiohttp_client(create_app(settings))
    assert (await _post(client, make_token())).status == 202  # the first fetch happened
    before = jwks_server.fetches
    later = new_rsa_key("published-later")
    jwks_server.keys.append(later)
    await asyncio.sleep(0.6)
    assert jwks_server.fetches > before
    assert (await _post(client, make_token(key=later))).status == 202
