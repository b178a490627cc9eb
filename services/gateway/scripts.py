"""Lua scripts sent once and then called by SHA (EVALSHA): no script text per request."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError


@dataclasses.dataclass(frozen=True)
class LuaScript:
    """A script and its SHA1, the name Redis caches it under."""

    source: str
    sha: str = ""

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", digest)


async def run_script(
    redis: Redis, script: LuaScript, keys: Sequence[Any], args: Sequence[Any]
) -> Any:
    """EVALSHA, falling back to EVAL (which caches it) the first time a server sees it."""
    try:
        return await redis.evalsha(script.sha, len(keys), *keys, *args)
    except NoScriptError:
        return await redis.eval(script.source, len(keys), *keys, *args)
