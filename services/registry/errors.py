"""Domain errors raised by the registry.

Every message is one line a person can act on; the CLI prints it as is and
services fail their start-up with it. Messages never contain secure values.
"""

from __future__ import annotations


class RegistryError(Exception):
    """Base class of every error the registry raises on purpose."""


class MissingKeyError(RegistryError):
    """A key has no value in the environment that was asked."""

    def __init__(self, key: str, *, env: str, path: str) -> None:
        super().__init__(
            f"registry key {key!r} is not set in environment {env!r} (parameter {path})"
        )
        self.key = key
        self.env = env
        self.path = path


class InvalidNameError(RegistryError):
    """A key or environment name that cannot be part of a parameter path."""


class BackendError(RegistryError):
    """The storage behind the registry failed (network, permissions, a bad file)."""
