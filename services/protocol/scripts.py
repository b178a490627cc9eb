"""Lua scripts with named keys and arguments, sent once and then called by SHA.

A script declares the names of its KEYS and ARGV; its body reads them as ``KEY.name``
and ``ARG.name``, and callers pass mappings, so nothing is taken by position and a
missing or unknown name is an error before Redis is asked. Lua functions owned by
other modules (a store's fragment) are prepended through ``parts``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

_MARK = "\x00"


def as_text(value: bytes | str | None) -> str:
    """A Redis reply (bytes, or ``None`` for a missing value) as text."""
    return value.decode() if isinstance(value, bytes) else (value or "")


def lua_string(value: str) -> str:
    """``value`` as a Lua string literal."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{escaped}'"


def lua_key(build: Callable[[str], str], var: str) -> str:
    """A Lua expression for the key ``build`` makes of the Lua variable ``var``.

    ``lua_key(names.events_key, "id")`` is ``('tl:job:' .. id .. ':events')``: the
    Python function stays the one place that knows the key's shape.
    """
    prefix, _, suffix = build(_MARK).partition(_MARK)
    parts = [lua_string(prefix)] if prefix else []
    parts.append(var)
    if suffix:
        parts.append(lua_string(suffix))
    return "(" + " .. ".join(parts) + ")"


@dataclasses.dataclass(frozen=True)
class LuaScript:
    """A script, the names of its KEYS and ARGV, and the Lua functions it builds on."""

    body: str
    keys: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    parts: tuple[str, ...] = ()
    source: str = dataclasses.field(init=False, repr=False)
    sha: str = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        keys = ", ".join(f"{name} = KEYS[{i}]" for i, name in enumerate(self.keys, 1))
        args = ", ".join(f"{name} = ARGV[{i}]" for i, name in enumerate(self.args, 1))
        source = "\n".join([f"local KEY = {{{keys}}}", f"local ARG = {{{args}}}", *self.parts])
        source += "\n" + self.body
        object.__setattr__(self, "source", source)
        digest = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", digest)

    def _ordered(self, kind: str, names: tuple[str, ...], given: Mapping[str, Any]) -> list[Any]:
        try:
            values = [given[name] for name in names]
        except KeyError:
            values = []
        if len(values) != len(given) or len(values) != len(names):  # a name missing or unknown
            missing = sorted(set(names) - set(given))
            extra = sorted(set(given) - set(names))
            raise ValueError(f"script {kind}: missing {missing}, unknown {extra}")
        return values

    async def run(
        self,
        redis: Redis,
        *,
        keys: Mapping[str, Any] | None = None,
        args: Mapping[str, Any] | None = None,
    ) -> Any:
        """EVALSHA, falling back to EVAL (which caches it) the first time a server sees it."""
        key_values = self._ordered("keys", self.keys, keys or {})
        arg_values = self._ordered("args", self.args, args or {})
        try:
            return await redis.evalsha(self.sha, len(key_values), *key_values, *arg_values)
        except NoScriptError:
            return await redis.eval(self.source, len(key_values), *key_values, *arg_values)
