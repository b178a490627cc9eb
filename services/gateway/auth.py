"""Bearer JWT verification against a cached JWKS, with Cognito's rules.

``verify_token`` is pure (token, keys, policy, now → claims); ``JwksCache``
owns the I/O: a timed refresh, and on an unknown ``kid`` at most one refetch
per interval, single-flight, so a flood of forged kids costs one fetch.

Every header member and claim is type-checked before it is used: JSON lets a
token carry a list ``kid``, ``exp: 1e400`` or a dict among its groups, and each
of those must be a 401, never an exception.
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
# NumericDate claims must be whole seconds in [0, 2**40) (2**40 s is ~ year 36812):
# a larger "time" is a forgery or a bug, and float() of a JSON big int overflows.
MAX_NUMERIC_DATE = 2**40


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenPolicy:
    """What a valid token must say."""

    issuer: str
    client_ids: tuple[str, ...]
    audiences: tuple[str, ...] = ()
    allow_id_tokens: bool = False
    leeway_s: int = 30
    admin_scope: str = "tinyllama/admin"
    admin_groups: tuple[str, ...] = ()  # Cognito groups whose members are operators
    required_scope: str = ""  # every authenticated route needs it ("" = none)

    def grants_admin(self, *, scopes: frozenset[str], groups: frozenset[str]) -> bool:
        """Operator rights come from the admin scope or a configured group, nothing else."""
        return self.admin_scope in scopes or not groups.isdisjoint(self.admin_groups)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Principal:
    """Who is calling, as far as the gateway cares."""

    subject: str
    scopes: frozenset[str]
    groups: frozenset[str]
    expires_at: float
    is_admin: bool = False

    def has_scope(self, scope: str) -> bool:
        """True if the token's ``scope`` claim grants ``scope`` (groups never do)."""
        return scope in self.scopes


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


def read_header(token: str) -> dict[str, Any]:
    """The token's protected header, if it is a JSON object naming RS256 and a string ``kid``.

    Nothing in it is trusted yet; this only refuses shapes the rest of the code can't use.
    """
    try:
        header = jws.extract_compact(token.encode()).headers()
    except (JoseError, ValueError, UnicodeError):
        raise AuthError("token is not a well-formed JWT") from None
    if not isinstance(header, dict):
        raise AuthError("token header is not a JSON object")
    if header.get("alg") not in ALGORITHMS:
        raise AuthError("token must be signed with RS256")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise AuthError("token header must name its signing key (a string kid)")
    return header


def peek_kid(token: str) -> str:
    """The ``kid`` in a token's header, without trusting anything else in it."""
    return read_header(token)["kid"]


def _numeric_date(claims: dict[str, Any], name: str) -> int | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthError(f"token rejected: {name} must be a number")
    if isinstance(value, float) and not value.is_integer():  # NaN and inf are not integers
        raise AuthError(f"token rejected: {name} must be whole seconds")
    if not 0 <= value < MAX_NUMERIC_DATE:
        raise AuthError(f"token rejected: {name} is out of range")
    return int(value)


def _string(claims: dict[str, Any], name: str, *, default: str | None = None) -> str:
    value = claims.get(name, default)
    if not isinstance(value, str):
        raise AuthError(f"token rejected: {name} must be a string")
    return value


def _one_of(claims: dict[str, Any], name: str, allowed: tuple[str, ...]) -> None:
    if _string(claims, name) not in allowed:
        raise AuthError(f"token rejected: {name} is not accepted")


def _groups(claims: dict[str, Any]) -> frozenset[str]:
    groups = claims.get("cognito:groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise AuthError("token rejected: cognito:groups must be a list of strings")
    return frozenset(groups)


def _check_use(claims: dict[str, Any], policy: TokenPolicy) -> None:
    """``token_use`` is required: ``access`` (for our clients), or ``id`` when enabled."""
    token_use = claims.get("token_use")
    if token_use == "access":
        _one_of(claims, "client_id", policy.client_ids)
    elif token_use == "id" and policy.allow_id_tokens:
        _one_of(claims, "aud", policy.audiences)
    elif isinstance(token_use, str):
        raise AuthError(f"token_use {token_use[:32]!r} is not accepted")
    else:
        raise AuthError("token rejected: token_use is missing or not a string")


def verify_token(token: str, *, keys: KeySet, policy: TokenPolicy, now: float) -> Principal:
    """Check header, signature and claims; return the caller or raise ``AuthError``."""
    read_header(token)
    try:
        decoded = jwt.decode(token, keys, algorithms=ALGORITHMS)
    except JoseError as exc:
        raise AuthError(f"token rejected: {exc.error}") from None
    except (ValueError, TypeError):
        raise AuthError("token is not a well-formed JWT") from None
    claims = dict(decoded.claims)
    _check_use(claims, policy)
    for name in ("exp", "nbf", "iat"):
        if (seconds := _numeric_date(claims, name)) is not None:
            claims[name] = seconds
    subject = _string(claims, "sub", default="")
    if not subject:
        raise AuthError("token rejected: sub must be a non-empty string")
    scopes = frozenset(_string(claims, "scope", default="").split())
    groups = _groups(claims)
    registry = jwt.JWTClaimsRegistry(
        now=int(now),
        leeway=policy.leeway_s,
        iss={"essential": True, "value": policy.issuer},
        exp={"essential": True},
    )
    try:
        registry.validate(claims)
    except JoseError as exc:
        raise AuthError(f"token rejected: {exc.error}: {exc.description}") from None
    return Principal(
        subject=subject,
        scopes=scopes,
        groups=groups,
        expires_at=float(claims["exp"]),
        is_admin=policy.grants_admin(scopes=scopes, groups=groups),
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
        self._kids: frozenset[str] = frozenset()
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        self.fetch_count = 0

    async def _fetch(self) -> None:
        self.fetch_count += 1
        self._fetched_at = self._clock()
        try:
            keys = await fetch_jwks(self._url, session=self._session)
        except JwksUnavailable as exc:
            # Keep serving the keys we have: an IdP outage must not log everyone out.
            log.warning("JWKS refresh failed, keeping cached keys: %s", exc)
            if self._keys is None:
                raise
            return
        self._keys = keys
        self._kids = frozenset(k.kid for k in keys.keys if k.kid)

    async def refresh(self) -> None:
        """Fetch the JWKS now (the timer calls this)."""
        async with self._lock:
            await self._fetch()

    def holds(self, kid: str) -> bool:
        """True while the current key set publishes ``kid``."""
        return kid in self._kids

    async def keys_for(self, kid: str) -> KeySet:
        """The key set, refetched first if ``kid`` is unknown and the last fetch is old enough."""
        if self._keys is not None and kid in self._kids:
            return self._keys
        async with self._lock:
            if self._keys is not None and kid in self._kids:
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
    """Token → Principal, with verified tokens cached until they expire or lose their key."""

    def __init__(self, *, jwks: JwksCache, policy: TokenPolicy, cache_size: int = 4096) -> None:
        self._jwks = jwks
        self._policy = policy
        # token -> (kid that signed it, caller): a refresh that drops the kid drops the entry.
        self._cache: dict[str, tuple[str, Principal]] = {}
        self._cache_size = cache_size

    async def authenticate(self, header: str | None) -> Principal:
        """Verify the Authorization header's token and return the caller.

        401 for a bad token; 403 for a good one without the required scope.
        """
        token = read_bearer(header)
        now = time.time()
        principal = self._cached(token, now=now)
        if principal is None:
            kid = peek_kid(token)
            keys = await self._jwks.keys_for(kid)
            principal = verify_token(token, keys=keys, policy=self._policy, now=now)
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[token] = (kid, principal)
        required = self._policy.required_scope
        if required and not (principal.has_scope(required) or principal.is_admin):
            raise ForbiddenError(required)
        return principal

    def _cached(self, token: str, *, now: float) -> Principal | None:
        entry = self._cache.get(token)
        if entry is None:
            return None
        kid, principal = entry
        if principal.expires_at + self._policy.leeway_s > now and self._jwks.holds(kid):
            return principal
        del self._cache[token]
        return None
