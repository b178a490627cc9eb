"""The storage interface every registry backend implements, and its record type."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from services.registry.errors import InvalidNameError
from services.registry.secret import MASK

STRING = "String"
SECURE_STRING = "SecureString"

# SSM allows these characters in parameter names; '/' separates levels.
_SEGMENT = r"[A-Za-z0-9_.\-]+"
_KEY_PATTERN = re.compile(rf"{_SEGMENT}(/{_SEGMENT})*")
_ENV_PATTERN = re.compile(r"[a-z0-9][a-z0-9_\-]*")


@dataclass(frozen=True, slots=True)
class Parameter:
    """One stored value: its key (relative to the environment), text and type.

    ``value`` is the plain text even for secure parameters, so it is left out
    of the generated ``repr``; :meth:`__repr__` shows a mask instead.
    """

    key: str
    value: str = field(repr=False)
    secure: bool = False

    @property
    def type_name(self) -> str:
        """The SSM type name: ``SecureString`` or ``String``."""
        return SECURE_STRING if self.secure else STRING

    @property
    def shown(self) -> str:
        """The value as it may be printed: masked when secure."""
        return MASK if self.secure else self.value

    def __repr__(self) -> str:
        return f"Parameter(key={self.key!r}, value={self.shown!r}, type={self.type_name!r})"


@runtime_checkable
class Backend(Protocol):
    """Where parameters live. Keys are relative to ``/tinyllama/<env>/``.

    Calls block (network or disk); the registry is read once at service
    start-up, before the event loop serves, so a sync interface is enough.
    """

    def read(self, env: str, key: str) -> Parameter | None:
        """Return the parameter, or ``None`` when it is not set."""
        ...

    def read_prefix(self, env: str, prefix: str) -> list[Parameter]:
        """Return every parameter under ``prefix`` (all of ``env`` when empty)."""
        ...

    def write(self, env: str, parameter: Parameter) -> None:
        """Create or overwrite a parameter, keeping its declared type."""
        ...

    def delete(self, env: str, key: str) -> bool:
        """Remove a parameter; return whether it existed."""
        ...


def check_key(key: str) -> str:
    """Return ``key`` if it can name a parameter, else raise ``InvalidNameError``."""
    if not _KEY_PATTERN.fullmatch(key):
        raise InvalidNameError(
            f"invalid registry key {key!r}: use segments of letters, digits, '_', '.', '-' "
            "joined by '/', with no leading or trailing '/'"
        )
    return key


def check_env(env: str) -> str:
    """Return ``env`` if it can name an environment, else raise ``InvalidNameError``."""
    if not _ENV_PATTERN.fullmatch(env):
        raise InvalidNameError(
            f"invalid environment name {env!r}: use lower-case letters, digits, '_' and '-'"
        )
    return env


def normalize_prefix(prefix: str) -> str:
    """Return ``prefix`` without outer slashes, checked like a key ('' means all)."""
    stripped = prefix.strip("/")
    return check_key(stripped) if stripped else ""


def is_under(key: str, prefix: str) -> bool:
    """Whether ``key`` sits below the (normalized) ``prefix``, by whole path segments."""
    return not prefix or key.startswith(prefix + "/")
