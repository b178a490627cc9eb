"""Environment-aware configuration registry: ``/tinyllama/<env>/<key>``.

Services call :func:`open_registry` once at start-up (a blocking, sync call,
made before the event loop serves) and build their frozen settings from it.
"""

from __future__ import annotations

from services.registry.backend import Backend, Parameter
from services.registry.cache import TtlCache
from services.registry.errors import (
    BackendError,
    InvalidNameError,
    MissingKeyError,
    RegistryError,
)
from services.registry.factory import open_backend, open_registry
from services.registry.files import FileBackend
from services.registry.keys import parameter_path
from services.registry.registry import Registry
from services.registry.secret import Secret
from services.registry.values import parse_bool

__all__ = [
    "Backend",
    "BackendError",
    "FileBackend",
    "InvalidNameError",
    "MissingKeyError",
    "Parameter",
    "Registry",
    "RegistryError",
    "Secret",
    "TtlCache",
    "open_backend",
    "open_registry",
    "parameter_path",
    "parse_bool",
]
