"""Auth test support: hand-built tokens, and an authenticator on a live JWKS.

joserfc's encoder checks the header it signs (a list ``kid`` is refused), so the
tokens an attacker could send are assembled here byte by byte.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from joserfc.jwk import RSAKey

from services.gateway.auth import Authenticator, JwksCache, TokenPolicy
from tests.conftest import CLIENT_ID, ISSUER

DELETE = object()  # as a value in ``bend``'s changes: leave that member out


def b64url(data: bytes) -> str:
    """Base64url without padding, as JWS segments are written."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: Any, claims: Any, key: RSAKey | None = None) -> str:
    """``header.payload.signature``: RS256 over the JSON text when ``key`` is given, else junk."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    if key is None:
        return f"{signing_input}.{b64url(b'not a signature')}"
    signature = key.private_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def bend(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied; a change to ``DELETE`` removes the member."""
    bent = dict(base)
    for name, value in changes.items():
        if value is DELETE:
            bent.pop(name, None)
        else:
            bent[name] = value
    return bent


def access_claims(**changes: Any) -> dict[str, Any]:
    """Claims of a valid Cognito-shaped access token with ``changes`` (``cognito__groups``)."""
    now = int(time.time())
    claims = {
        "sub": "mallory",
        "iss": ISSUER,
        "client_id": CLIENT_ID,
        "token_use": "access",
        "scope": "",
        "iat": now,
        "exp": now + 600,
    }
    return bend(claims, {name.replace("__", ":"): value for name, value in changes.items()})


def signed(key: RSAKey, **changes: Any) -> str:
    """A token signed by ``key`` (header names its kid) over ``access_claims(**changes)``."""
    return forge({"alg": "RS256", "kid": key.kid, "typ": "JWT"}, access_claims(**changes), key)


@contextlib.asynccontextmanager
async def live_authenticator(
    jwks_url: str, policy: TokenPolicy, *, unknown_kid_interval_s: float
) -> AsyncIterator[tuple[Authenticator, JwksCache]]:
    """An authenticator on the JWKS at ``jwks_url``, warmed first as the gateway does."""
    async with aiohttp.ClientSession() as session:
        jwks = JwksCache(jwks_url, session, unknown_kid_interval_s=unknown_kid_interval_s)
        await jwks.refresh()
        yield Authenticator(jwks=jwks, policy=policy), jwks
