"""Property: whatever a bearer token holds, authentication answers a Principal or a 401."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from services.gateway.auth import Authenticator, AuthError, Principal, TokenPolicy
from tests.conftest import CLIENT_ID, ISSUER
from tests.gateway.auth_support import DELETE, access_claims, bend, forge, live_authenticator

# Header members joserfc validates by type (crit and b64 change how the token is read).
REGISTERED_HEADERS = ["jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256", "cty", "crit", "b64", "zip"]
EDGE_NUMBERS = [10**400, -(10**400), 2**40, 2**63, 1e20, 1e308, 0.5, -1, 0, math.inf, math.nan]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from(EDGE_NUMBERS)
    | st.floats()
    | st.text(max_size=12)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _plausible(right: Any, *near: Any) -> st.SearchStrategy[Any]:
    """The right value half the time; else a nearly-right one, any JSON value, or nothing."""
    return st.one_of(st.just(right), st.just(right), st.sampled_from([*near, DELETE]), JSON)


def _bent(draw: st.DrawFn, base: dict[str, Any], choices: dict[str, Any]) -> dict[str, Any]:
    """``base`` with a few members redrawn from ``choices`` (or removed)."""
    names = draw(st.sets(st.sampled_from(sorted(choices)), max_size=4))
    return bend(base, {name: draw(choices[name]) for name in sorted(names)})


@st.composite
def headers(draw: st.DrawFn, kid: str) -> Any:
    """A JWS header with some members bent to any JSON type, sometimes not an object at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON)
    header = _bent(
        draw,
        {"alg": "RS256", "kid": kid, "typ": "JWT"},
        {
            "alg": _plausible("RS256", "none", "HS256"),
            "kid": _plausible(kid, [kid], {"kid": kid}),
            "typ": _plausible("JWT"),
        },
    )
    extra_names = st.sampled_from(REGISTERED_HEADERS) | st.text(max_size=6)
    return {**header, **draw(st.dictionaries(extra_names, JSON, max_size=2))}


@st.composite
def claims(draw: st.DrawFn) -> Any:
    """Valid access-token claims with some bent to any JSON value (or removed)."""
    if draw(st.integers(0, 19)) == 0:
        return draw(JSON)
    base = access_claims()
    return _bent(
        draw,
        base,
        {
            "exp": _plausible(base["exp"], float(base["exp"]), 10**400, 1e20),
            "nbf": _plausible(base["iat"]),
            "iat": _plausible(base["iat"]),
            "sub": _plausible("alice", ""),
            "client_id": _plausible(CLIENT_ID, [CLIENT_ID]),
            "token_use": _plausible("access", "id"),
            "scope": _plausible("tinyllama/invoke", ["tinyllama/admin"]),
            "cognito:groups": _plausible(["admin"], [{"admin": 1}], "admin"),
            "iss": _plausible(ISSUER, [ISSUER]),
            "aud": _plausible(CLIENT_ID, [CLIENT_ID]),
        },
    )


POLICY = TokenPolicy(
    issuer=ISSUER, client_ids=(CLIENT_ID,), audiences=(CLIENT_ID,), allow_id_tokens=True
)


@pytest.fixture
async def authenticator(jwks_server) -> AsyncIterator[Authenticator]:
    """An authenticator on the real JWKS, with ID tokens allowed so both paths are walked."""
    async with live_authenticator(jwks_server.url, POLICY, unknown_kid_interval_s=3600.0) as pair:
        yield pair[0]


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), sign=st.integers(0, 3).map(bool))  # signed 3 times in 4
async def test_any_header_and_claims_give_a_principal_or_a_401(
    authenticator, signing_key, data, sign
):
    """Arbitrary JSON headers and claims, signed or not: a Principal or AuthError, nothing else."""
    header = data.draw(headers(signing_key.kid), label="header")
    body = data.draw(claims(), label="claims")
    token = forge(header, body, signing_key if sign else None)
    try:
        principal = await authenticator.authenticate(f"Bearer {token}")
    except AuthError:
        event("401")
        return
    event("accepted")
    assert isinstance(principal, Principal)
    assert isinstance(principal.subject, str)
    assert principal.subject
    assert math.isfinite(principal.expires_at)


@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(token=st.text(min_size=1, max_size=300))
async def test_any_text_as_a_token_gives_a_401(authenticator, token):
    """A bearer value that is arbitrary text (dots, unicode, junk base64) is a 401."""
    with pytest.raises(AuthError):
        await authenticator.authenticate(f"Bearer {token}")
