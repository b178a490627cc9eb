"""The registry: typed, cached reads of ``/tinyllama/<env>/<key>`` from one backend.

Reads block (SSM over HTTPS, or a local file). Services build their settings
from the registry once at start-up, before the event loop serves, so the
API is synchronous on purpose; do not call it from a request handler.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import Any, TypeVar

from services.registry.backend import Backend, Parameter, check_env, check_key, normalize_prefix
from services.registry.cache import TtlCache
from services.registry.errors import MissingKeyError
from services.registry.keys import parameter_path
from services.registry.secret import Secret

logger = logging.getLogger(__name__)

T = TypeVar("T")
Value = str | Secret

# Cache keys are (env, kind, name): the environment is part of every key, so
# registries that share a cache never hand one environment's value to another.
_KEY = "key"
_PREFIX = "prefix"


class Registry:
    """Configuration of one environment, read through a backend and an LRU+TTL cache."""

    def __init__(
        self,
        env: str,
        backend: Backend,
        *,
        cache: TtlCache[Hashable, Any] | None = None,
    ) -> None:
        self._env = check_env(env)
        self._backend = backend
        self._cache: TtlCache[Hashable, Any] = cache if cache is not None else TtlCache()

    def __repr__(self) -> str:
        return f"Registry(env={self._env!r}, backend={self._backend!r})"

    @property
    def env(self) -> str:
        """The environment this registry reads and writes."""
        return self._env

    @property
    def backend(self) -> Backend:
        """The storage behind this registry."""
        return self._backend

    def for_env(self, env: str) -> Registry:
        """Return a registry of ``env`` sharing this one's backend and cache."""
        return Registry(env, self._backend, cache=self._cache)

    def path(self, key: str) -> str:
        """Return the full parameter path of ``key`` in this environment."""
        return parameter_path(env=self._env, key=check_key(key))

    # Reads -----------------------------------------------------------------

    def parameter(self, key: str) -> Parameter:
        """Return the stored parameter (value and type); raise ``MissingKeyError`` if unset."""
        check_key(key)
        cached = self._cache.get((self._env, _KEY, key))
        if cached is not None:
            return cached
        found = self._backend.read(self._env, key)
        if found is None:
            raise MissingKeyError(key, env=self._env, path=self.path(key))
        logger.debug("registry read %s (%s)", self.path(key), found.type_name)
        self._cache.put((self._env, _KEY, key), found)
        return found

    def parameters(self, prefix: str = "") -> list[Parameter]:
        """Return every parameter under ``prefix`` in one (paginated) backend listing."""
        prefix = normalize_prefix(prefix)
        cached = self._cache.get((self._env, _PREFIX, prefix))
        if cached is not None:
            return list(cached)
        found = self._backend.read_prefix(self._env, prefix)
        root = parameter_path(env=self._env, key=prefix)
        logger.debug("registry listed %d parameters under %s", len(found), root)
        self._cache.put((self._env, _PREFIX, prefix), tuple(found))
        # A listing answers later single-key reads too, so start-up costs one call.
        for parameter in found:
            self._cache.put((self._env, _KEY, parameter.key), parameter)
        return found

    def get(self, key: str) -> Value:
        """Return the value of ``key``: a ``str``, or a :class:`Secret` for a SecureString."""
        return _exposed(self.parameter(key))

    def get_many(self, prefix: str = "") -> dict[str, Value]:
        """Return ``{key: value}`` for every key under ``prefix`` (keys relative to the env)."""
        return {parameter.key: _exposed(parameter) for parameter in self.parameters(prefix)}

    def put(self, key: str, value: str | Secret, *, secure: bool = False) -> None:
        """Store ``value`` as a String, or as a SecureString when ``secure`` (or a Secret)."""
        if isinstance(value, Secret):
            value, secure = value.reveal(), True
        self._backend.write(self._env, Parameter(check_key(key), value, secure=secure))
        logger.info(
            "registry wrote %s (%s)", self.path(key), "SecureString" if secure else "String"
        )
        self.refresh()

    def delete(self, key: str) -> None:
        """Remove ``key``; raise ``MissingKeyError`` when it was not set."""
        existed = self._backend.delete(self._env, check_key(key))
        self.refresh()
        if not existed:
            raise MissingKeyError(key, env=self._env, path=self.path(key))
        logger.info("registry deleted %s", self.path(key))

    def refresh(self) -> None:
        """Forget every cached value of this environment; the next read asks the backend."""
        self._cache.discard(lambda cache_key: cache_key[0] == self._env)


def _exposed(parameter: Parameter) -> Value:
    return Secret(parameter.value) if parameter.secure else parameter.value
