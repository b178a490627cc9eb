"""Where tokens live: the OS keyring when there is one, else a 0600 file in the config dir.

Tokens are never logged: ``Tokens``' repr hides them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import msgspec

from clients.auth.config import LoginError, config_dir

KEYRING_SERVICE = "tinyllama"


class Tokens(msgspec.Struct, kw_only=True, frozen=True, repr_omit_defaults=True):
    """A login: access token, refresh token (if any), when the access token expires."""

    access_token: str
    expires_at: float
    refresh_token: str = ""
    kind: str = "cognito"  # cognito | machine | dev
    env: str = ""

    def __repr__(self) -> str:
        return f"Tokens(kind={self.kind!r}, env={self.env!r}, expires_at={self.expires_at})"


class TokenStore(Protocol):
    """Keeps one login."""

    def load(self) -> Tokens | None:
        """The stored login, or None."""

    def save(self, tokens: Tokens) -> None:
        """Store ``tokens`` (replacing any)."""

    def clear(self) -> None:
        """Forget the login."""


class FileStore:
    """A JSON file only its owner can read (mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Tokens | None:
        """The stored login, or None (also for a file that does not parse)."""
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=Tokens)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return None

    def save(self, tokens: Tokens) -> None:
        """Write atomically, created 0600 (never readable by others, not even briefly)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = self.path.with_suffix(".tmp")
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(msgspec.json.encode(tokens))
        os.replace(partial, self.path)

    def clear(self) -> None:
        """Delete the file."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class KeyringStore:
    """The OS keyring (Keychain, Credential Manager, Secret Service), one entry per env."""

    def __init__(self, account: str) -> None:
        self.account = account

    def load(self) -> Tokens | None:
        """The stored login, or None."""
        import keyring

        raw = keyring.get_password(KEYRING_SERVICE, self.account)
        try:
            return msgspec.json.decode(raw, type=Tokens) if raw else None
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None

    def save(self, tokens: Tokens) -> None:
        """Store the login as one keyring secret."""
        import keyring
        from keyring.errors import KeyringError

        secret = msgspec.json.encode(tokens).decode()
        try:
            keyring.set_password(KEYRING_SERVICE, self.account, secret)
        except KeyringError as exc:  # a locked or absent Secret Service, say
            raise LoginError(
                f"the OS keyring refused the login ({exc}); "
                "set TINYLLAMA_TOKEN_STORE=file to keep it in a private file instead"
            ) from None

    def clear(self) -> None:
        """Delete the keyring entry."""
        import keyring
        from keyring.errors import PasswordDeleteError

        with contextlib.suppress(PasswordDeleteError):
            keyring.delete_password(KEYRING_SERVICE, self.account)


def keyring_usable() -> bool:
    """True if a real keyring backend is there (not the 'fail' or a plaintext one)."""
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return False
    backend = keyring.get_keyring()
    return not isinstance(backend, fail.Keyring) and getattr(backend, "priority", 0) >= 1


def default_store(environ: Mapping[str, str]) -> TokenStore:
    """The keyring where one exists (``TINYLLAMA_TOKEN_STORE=file`` forces the file)."""
    env = environ.get("TINYLLAMA_ENV", "local")
    if environ.get("TINYLLAMA_TOKEN_STORE") != "file" and keyring_usable():
        return KeyringStore(f"login:{env}")
    return FileStore(config_dir(environ) / f"tokens-{env}.json")
