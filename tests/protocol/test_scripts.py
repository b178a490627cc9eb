"""Lua scripts take their keys and arguments by name, checked before Redis is asked."""

from __future__ import annotations

import pytest

from services.protocol.scripts import LuaScript

ECHO = LuaScript(keys=("box",), args=("value",), body="return {KEY.box, ARG.value}")


async def test_a_script_reads_its_keys_and_args_by_name(redis):
    """``KEY.box`` and ``ARG.value`` are what the caller passed under those names."""
    assert await ECHO.run(redis, keys={"box": "k"}, args={"value": "v"}) == [b"k", b"v"]


async def test_a_missing_or_unknown_name_is_refused_before_redis(redis):
    """A typo in a key or argument name fails loudly instead of shifting positions."""
    with pytest.raises(ValueError, match="missing"):
        await ECHO.run(redis, keys={"box": "k"}, args={})
    with pytest.raises(ValueError, match="unknown"):
        await ECHO.run(redis, keys={"box": "k", "extra": "x"}, args={"value": "v"})
