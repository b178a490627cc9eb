"""Tokens and API keys: the OS keyring when there is one, else a 0600 file. Never logged."""

from __future__ import annotations

import json
import os
from pathlib import Path

SERVICE = "tinyllama-desktop"


def _keyring():
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return None
    if isinstance(keyring.get_keyring(), fail.Keyring):
        return None
    return keyring


class SecretStore:
    """``store.get(name)`` / ``store.set(name, value)``; the file fallback is mode 0600."""

    def __init__(self, folder: Path, *, use_keyring: bool = True) -> None:
        self._path = folder / "secrets.json"
        self._keyring = _keyring() if use_keyring else None

    def __repr__(self) -> str:
        return f"SecretStore({'keyring' if self._keyring else self._path})"

    def _read_file(self) -> dict[str, str]:
        try:
            return json.loads(self._path.read_text())
        except (OSError, ValueError):
            return {}

    def get(self, name: str) -> str:
        """The secret, or ``""``."""
        if self._keyring is not None:
            return self._keyring.get_password(SERVICE, name) or ""
        return self._read_file().get(name, "")

    def set(self, name: str, value: str) -> None:
        """Keep the secret (keyring, or the owner-only file)."""
        if self._keyring is not None:
            self._keyring.set_password(SERVICE, name, value)
            return
        data = {**self._read_file(), name: value}
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.chmod(self._path, 0o600)
