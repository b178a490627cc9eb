"""A local dev issuer: one RSA key on disk, its JWKS, and tokens shaped like Cognito's.

The gateway verifies these with exactly the code that verifies Cognito
tokens; only the issuer, client id and key source differ.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from joserfc import jwt
from joserfc.jwk import RSAKey

DEV_ISSUER = "tinyllama-local"
DEV_CLIENT_ID = "tinyllama-local"
LOCAL_ENVIRONMENTS = frozenset({"local"})


class NotLocalError(Exception):
    """Dev tokens exist only for local environments."""


def default_keys_dir() -> Path:
    """Where the dev key and its JWKS live (``TINYLLAMA_DEV_KEYS`` overrides)."""
    return Path(os.environ.get("TINYLLAMA_DEV_KEYS", "~/.cache/tinyllama/dev-keys")).expanduser()


def ensure_dev_key(keys_dir: Path) -> RSAKey:
    """Load the dev signing key, creating it (and its public JWKS) on first use."""
    private_path = keys_dir / "signing-key.json"
    jwks_path = keys_dir / "jwks.json"
    if private_path.exists():
        key = RSAKey.import_key(json.loads(private_path.read_text()))
    else:
        keys_dir.mkdir(parents=True, exist_ok=True)
        key = RSAKey.generate_key(
            2048,
            parameters={"kid": f"dev-{uuid.uuid4().hex[:8]}", "use": "sig", "alg": "RS256"},
            private=True,
        )
        staging = private_path.with_suffix(".tmp")
        staging.write_text(json.dumps(key.as_dict(private=True)))
        staging.chmod(0o600)
        os.replace(staging, private_path)
    if not jwks_path.exists():
        staging = jwks_path.with_suffix(".tmp")
        staging.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
        os.replace(staging, jwks_path)
    return key


def jwks_path(keys_dir: Path) -> Path:
    """The public JWKS file the local gateway trusts."""
    return keys_dir / "jwks.json"


def mint_token(
    key: RSAKey,
    *,
    subject: str,
    scopes: tuple[str, ...] = (),
    ttl_s: int = 3600,
    issuer: str = DEV_ISSUER,
    client_id: str = DEV_CLIENT_ID,
    now: float | None = None,
) -> str:
    """An RS256 access token with Cognito's claim shape."""
    issued = int(now if now is not None else time.time())
    claims = {
        "sub": subject,
        "iss": issuer,
        "client_id": client_id,
        "token_use": "access",
        "scope": " ".join(scopes),
        "iat": issued,
        "exp": issued + ttl_s,
        "jti": uuid.uuid4().hex,
    }
    header = {"alg": "RS256", "kid": key.kid, "typ": "JWT"}
    return jwt.encode(header, claims, key)


def require_local(env: str) -> None:
    """Refuse to mint outside a local environment: real ones trust Cognito only."""
    if env not in LOCAL_ENVIRONMENTS:
        raise NotLocalError(
            f"dev tokens are for local runs only (TINYLLAMA_ENV={env!r}); "
            "in AWS environments get a token from Cognito"
        )
