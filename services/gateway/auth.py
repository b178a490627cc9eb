"""Bearer JWT verification against a cached JWKS, with Cognito's rules.

``verify_token`` is pure (token, keys, policy, now → claims); ``JwksCache``
owns the I/O: a timed refresh, and on an unknown ``kid`` at most one refetch
per interval, single-flight, so a flood of forged kids costs one fetch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from services.gateway.http.problems import Problem

log = logging.getLogger("tinyllama.gateway.auth")
ALGORITHMS = ["RS256"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenPolicy:
    """What a valid token must say."""

    issuer: str
    client_ids: tuple[str, ...]
    audiences: tuple[str, ...] = ()
    allow_id_tokens: bool = False
    leeway_s: int = 30
    admin_scope: str = "tinyllama/admin"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Principal:
    """Who is calling, as far as the gateway cares."""

    subject: str
    scopes: frozenset[str]
    groups: frozenset[str]
    expires_at: float

    def has_scope(self, scope: str) -> bool:
        """True if the token grants ``scope`` by OAuth scope or by a Cognito group of that name."""
        return scope in self.scopes or scope in self.groups or scope.split("/")[-1] in self.groups


class AuthError(Problem):
    """401 with the challenge header RFC 6750 asks for."""

    def __init__(self, detail: str, *, error: str = "invalid_token") -> None:
        challenge = f'Bearer realm="tinyllama", error="{error}"'
        super().__init__(
            401,
            "unauthorized",
            "Authentication required",
            detail=detail,
            headers={"WWW-Authenticate": challenge},
        )


class ForbiddenError(Problem):
    """403: a valid token that lacks the scope a route needs."""

    def __init__(self, scope: str) -> None:
        challenge = f'Bearer realm="tinyllama", error="insufficient_scope", scope="{scope}"'
        super().__init__(
            403,
            "forbidden",
            "Insufficient scope",
            detail=f"this route needs the {scope!r} scope",
            headers={"WWW-Authenticate": challenge},
        )


def read_bearer(header: str | None) -> str:
    """The token from an ``Authorization: Bearer`` header, or a 401."""
    if not header:
        raise AuthError("missing Authorization header", error="invalid_request")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("Authorization header must be 'Bearer <token>'", error="invalid_request")
    return token.strip()


def peek_kid(token: str) -> str | None:
    """The ``kid`` in a token's header, without trusting anything else in it."""
    try:
        return jws.extract_compact(token.encode()).headers().get("kid")
    except (JoseError, ValueError, UnicodeError):
        raise AuthError("token is not a well-formed JWT") from None


def verify_token(token: str, *, keys: KeySet, policy: TokenPolicy, now: float) -> Principal:
    """Check signature and claims; return the caller or raise ``AuthError``."""
    try:
        decoded = jwt.decode(token, keys, algorithms=ALGORITHMS)
    except JoseError as exc:
        raise AuthError(f"token rejected: {exc.error}") from None
    except (ValueError, TypeError):
        raise AuthError("token is not a well-formed JWT") from None
    claims = decoded.claims
    token_use = claims.get("token_use", "access")
    rules: dict[str, Any] = {
        "iss": {"essential": True, "value": policy.issuer},
        "exp": {"essential": True},
        "sub": {"essential": True},
    }
    if token_use == "access":
        rules["client_id"] = {"essential": True, "values": list(policy.client_ids)}
    elif token_use == "id" and policy.allow_id_tokens:
        rules["aud"] = {"essential": True, "values": list(policy.audiences)}
    else:
        raise AuthError(f"token_use {token_use!r} is not accepted")
    registry = jwt.JWTClaimsRegistry(now=int(now), leeway=policy.leeway_s, **rules)
    try:
        registry.validate(claims)
    except JoseError as exc:
        raise AuthError(f"token rejected: {exc.error}: {exc.description}") from None
    scope = claims.get("scope", "")
    groups = claims.get("cognito:groups", [])
    return Principal(
        subject=str(claims["sub"]),
        scopes=frozenset(scope.split()) if isinstance(scope, str) else frozenset(),
        groups=frozenset(groups) if isinstance(groups, list) else frozenset(),
        expires_at=float(claims["exp"]),
    )


class JwksUnavailable(Exception):
    """The JWKS could not be fetched or parsed."""


async def fetch_jwks(url: str, *, session: aiohttp.ClientSession) -> KeySet:
    """Load a JWKS from ``https://``, ``http://`` or ``file://`` without blocking the loop."""
    parsed = urlparse(url)
    try:
        if parsed.scheme == "file":
            text = await asyncio.to_thread(Path(parsed.path).read_text)
            data = json.loads(text)
        elif parsed.scheme in ("http", "https"):
            timeout = aiohttp.ClientTimeout(total=5)
            async with session.get(url, timeout=timeout) as response:
                response.raise_for_status()
                data = await response.json(content_type=None)
        else:
            raise JwksUnavailable(f"unsupported JWKS URL scheme {parsed.scheme!r}")
        return KeySet.import_key_set(data)
    except (TimeoutError, OSError, ValueError, aiohttp.ClientError, JoseError) as exc:
        raise JwksUnavailable(f"cannot load JWKS from {url}: {exc}") from exc


class JwksCache:
    """Keys from a JWKS URL, refreshed on a timer and (rate-limited) on unknown kids."""

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        *,
        refresh_s: float = 3600.0,
        unknown_kid_interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._session = session
        self._refresh_s = refresh_s
        self._unknown_kid_interval_s = unknown_kid_interval_s
        self._clock = clock
        self._keys: KeySet | None = None
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        self.fetch_count = 0

    async def _fetch(self) -> None:
        self.fetch_count += 1
        self._fetched_at = self._clock()
        try:
            self._keys = await fetch_jwks(self._url, session=self._session)
        except JwksUnavailable as exc:
            # Keep serving the keys we have: an IdP outage must not log everyone out.
            log.warning("JWKS refresh failed, keeping cached keys: %s", exc)
            if self._keys is None:
                raise

    async def refresh(self) -> None:
        """Fetch the JWKS now (the timer calls this)."""
        async with self._lock:
            await self._fetch()

    def _kids(self) -> set[str]:
        return {k.kid for k in self._keys.keys if k.kid} if self._keys is not None else set()

    async def keys_for(self, kid: str | None) -> KeySet:
        """The key set, refetched first if ``kid`` is unknown and the last fetch is old enough."""
        if self._keys is not None and (kid is None or kid in self._kids()):
            return self._keys
        async with self._lock:
            if self._keys is not None and (kid is None or kid in self._kids()):
                return self._keys
            if (
                self._keys is None
                or self._clock() - self._fetched_at >= self._unknown_kid_interval_s
            ):
                try:
                    await self._fetch()
                except JwksUnavailable:
                    raise AuthError("signing keys are unavailable, try again shortly") from None
        return self._keys

    async def run_refresh_timer(self) -> None:
        """Refresh forever on the configured period; the app cancels it on shutdown."""
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except JwksUnavailable:
                pass


class Authenticator:
    """Token → Principal, with verified tokens cached until they expire."""

    def __init__(self, *, jwks: JwksCache, policy: TokenPolicy, cache_size: int = 4096) -> None:
        self._jwks = jwks
        self._policy = policy
        self._cache: dict[str, Principal] = {}
        self._cache_size = cache_size

    async def authenticate(self, header: str | None) -> Principal:
        """Verify the Authorization header's token and return the caller."""
        token = read_bearer(header)
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None and cached.expires_at + self._policy.leeway_s > now:
            return cached
        keys = await self._jwks.keys_for(peek_kid(token))
        principal = verify_token(token, keys=keys, policy=self._policy, now=now)
        if len(self._cache) >= self._cache_size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[token] = principal
        return principal
