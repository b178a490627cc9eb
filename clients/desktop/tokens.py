"""Where the bearer token comes from: the seam for the Cognito (PKCE) login.

The auth controller asks a ``TokenSource``; ``clients/auth.py`` will add a Cognito
one. Here: ``TINYLLAMA_TOKEN``, else (locally only) a token from the dev key.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from typing import Protocol

ADMIN_SCOPE = "tinyllama/admin"


class TokenSource(Protocol):
    """Something that can hand the app a bearer token."""

    def token(self) -> str:
        """A valid access token (raises ``LookupError`` when none can be had)."""
        ...


class EnvTokenSource:
    """``TINYLLAMA_TOKEN``; else, with ``TINYLLAMA_ENV=local``, one minted from the dev key."""

    def __init__(self, environ: Mapping[str, str] = os.environ, *, subject: str = "") -> None:
        self._environ = environ
        self._subject = subject or environ.get("USER", "desktop")

    def __repr__(self) -> str:
        return "EnvTokenSource()"

    def token(self) -> str:
        """The environment's token, or a dev token when running locally."""
        explicit = self._environ.get("TINYLLAMA_TOKEN", "")
        if explicit:
            return explicit
        if self._environ.get("TINYLLAMA_ENV", "local") != "local":
            raise LookupError("no token: run `tinyllama login`, or set TINYLLAMA_TOKEN")
        from services.devstack.identity import default_keys_dir, ensure_dev_key, mint_token

        key = ensure_dev_key(default_keys_dir())
        return mint_token(key, subject=self._subject, scopes=(ADMIN_SCOPE,), ttl_s=12 * 3600)


class LoginTokenSource:
    """The stored ``tinyllama login`` (Cognito, refreshed a minute before it expires).

    ``TINYLLAMA_TOKEN``, or a local environment, go through ``EnvTokenSource`` instead.
    """

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self._environ = environ
        self._fallback = EnvTokenSource(environ)

    def __repr__(self) -> str:
        return "LoginTokenSource()"

    def token(self) -> str:
        """The stored login's access token, refreshed when due."""
        from clients.auth.config import is_local, load_login_config
        from clients.auth.flow import current_token
        from clients.auth.store import default_store

        if self._environ.get("TINYLLAMA_TOKEN") or is_local(self._environ):
            return self._fallback.token()
        token = current_token(default_store(self._environ), load_login_config(self._environ))
        if not token:
            raise LookupError("not logged in: run `tinyllama login`, or set TINYLLAMA_TOKEN")
        return token


def claims(token: str) -> dict:
    """The token's claims, unverified: only to label the UI (the server verifies)."""
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}


def scopes_of(token: str) -> tuple[str, ...]:
    """The space-separated ``scope`` claim as a tuple."""
    return tuple(str(claims(token).get("scope", "")).split())
