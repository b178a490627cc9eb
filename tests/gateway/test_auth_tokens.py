"""Token rules, one claim at a time: every malformed header or claim is a 401, never a crash.

The authenticator verifies against a JWKS served over real HTTP; the tokens are
built by hand (``auth_support.forge``) so their headers and claims can be anything.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.gateway.auth import Authenticator, AuthError, JwksCache, TokenPolicy
from tests.conftest import CLIENT_ID, ISSUER
from tests.gateway.auth_support import (
    DELETE,
    access_claims,
    bend,
    forge,
    live_authenticator,
    signed,
)
from tests.support import new_rsa_key

POLICY = TokenPolicy(issuer=ISSUER, client_ids=(CLIENT_ID,))
NOW = int(time.time())


@pytest.fixture
async def live(jwks_server) -> AsyncIterator[tuple[Authenticator, JwksCache]]:
    """The default policy on the test JWKS; unknown kids refetch at once."""
    async with live_authenticator(jwks_server.url, POLICY, unknown_kid_interval_s=0.0) as pair:
        yield pair


@pytest.fixture
def authenticator(live) -> Authenticator:
    """An authenticator with the default policy (access tokens of the test client)."""
    return live[0]


@pytest.fixture
def jwks(live) -> JwksCache:
    """The authenticator's JWKS cache."""
    return live[1]


async def _rejected(authenticator: Authenticator, token: str) -> AuthError:
    with pytest.raises(AuthError) as caught:
        await authenticator.authenticate(f"Bearer {token}")
    return caught.value


async def test_a_well_formed_access_token_is_accepted(authenticator, signing_key):
    """The hand-built token the other tests bend is itself valid (the baseline)."""
    principal = await authenticator.authenticate(f"Bearer {signed(signing_key)}")
    assert principal.subject == "mallory"
    assert principal.scopes == frozenset()


@pytest.mark.parametrize(
    "kid",
    [["test-key-1"], {"kid": "test-key-1"}, 7, DELETE],
    ids=["list", "object", "number", "missing"],
)
async def test_kid_that_is_not_a_string_is_401(authenticator, signing_key, kid: Any):
    """A header ``kid`` of any JSON type but string (or none at all) is a 401."""
    header = bend({"alg": "RS256", "typ": "JWT"}, {"kid": kid})
    for key in (signing_key, None):
        await _rejected(authenticator, forge(header, access_claims(), key))


@pytest.mark.parametrize(
    "header", [["alg"], "alg", 42], ids=["array-naming-alg", "string-naming-alg", "number"]
)
async def test_header_that_is_not_a_json_object_is_401(authenticator, signing_key, header: Any):
    """A protected header that is valid JSON but not an object is a 401."""
    await _rejected(authenticator, forge(header, access_claims(), signing_key))


@pytest.mark.parametrize(
    "exp",
    [10**400, 1e20, 2**40, NOW + 600.5, True],
    ids=["json-bigint", "huge-float", "year-36812", "fractional", "bool"],
)
async def test_exp_that_is_not_a_sane_integer_is_401(authenticator, signing_key, exp: Any):
    """``exp`` must be an integer in [0, 2**40): big ints, huge or fractional floats are 401."""
    await _rejected(authenticator, signed(signing_key, exp=exp))


@pytest.mark.parametrize(
    ("claim", "value"),
    [("nbf", -1), ("nbf", NOW - 0.5), ("iat", -1), ("iat", 10**400), ("iat", True)],
    ids=["nbf-negative", "nbf-fractional", "iat-negative", "iat-bigint", "iat-bool"],
)
async def test_nbf_and_iat_must_be_sane_integers(authenticator, signing_key, claim, value):
    """``nbf`` and ``iat``, when present, follow the same integer rules as ``exp``."""
    await _rejected(authenticator, signed(signing_key, **{claim: value}))


@pytest.mark.parametrize(
    "groups",
    [[{"name": "admin"}], [["admin"]], "admin", [1]],
    ids=["object-member", "list-member", "string", "number-member"],
)
async def test_groups_that_are_not_a_list_of_strings_are_401(authenticator, signing_key, groups):
    """``cognito:groups`` must be a list of strings; anything else is a 401, not a crash."""
    await _rejected(authenticator, signed(signing_key, cognito__groups=groups))


@pytest.mark.parametrize("scope", [["tinyllama/admin"], 5, {"tinyllama/admin": True}])
async def test_scope_that_is_not_a_string_is_401(authenticator, signing_key, scope: Any):
    """``scope`` must be a space-separated string; a list is refused, not silently dropped."""
    await _rejected(authenticator, signed(signing_key, scope=scope))


@pytest.mark.parametrize("sub", ["", 5, ["alice"]], ids=["empty", "number", "list"])
async def test_sub_must_be_a_non_empty_string(authenticator, signing_key, sub: Any):
    """``sub`` names the caller (usage, rate limits): it must be a non-empty string."""
    await _rejected(authenticator, signed(signing_key, sub=sub))


async def test_token_without_token_use_is_401(authenticator, signing_key):
    """A token that does not say ``token_use`` is refused, not taken for an access token."""
    error = await _rejected(authenticator, signed(signing_key, token_use=DELETE))
    assert "token_use" in error.detail


@pytest.mark.parametrize(
    "client_id", [[CLIENT_ID], [CLIENT_ID, "someone-else"]], ids=["one", "with-another"]
)
async def test_client_id_that_is_a_list_is_401(authenticator, signing_key, client_id):
    """``client_id`` must be one configured string; a list holding it is refused."""
    await _rejected(authenticator, signed(signing_key, client_id=client_id))


async def test_key_dropped_from_jwks_invalidates_cached_verification(
    authenticator, jwks, jwks_server
):
    """Once a refresh drops a kid, a token it signed is refused even if verified before."""
    doomed = new_rsa_key("compromised")
    jwks_server.keys.append(doomed)
    await jwks.refresh()
    token = signed(doomed)
    assert (await authenticator.authenticate(f"Bearer {token}")).subject == "mallory"
    jwks_server.keys.remove(doomed)
    await jwks.refresh()
    await _rejected(authenticator, token)
