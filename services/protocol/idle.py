"""The fleet's idle deadline, pushed later by arriving and finishing jobs (never earlier)."""

from __future__ import annotations

from redis.asyncio import Redis

from services.protocol import names

_RAISE_IDLE = """
-- KEYS: 1 fleet hash. ARGV: 1 new idle deadline, 2 'wanted' (1/0)
local current = tonumber(redis.call('HGET', KEYS[1], 'idle_until') or '0')
if tonumber(ARGV[1]) > current then redis.call('HSET', KEYS[1], 'idle_until', ARGV[1]) end
if ARGV[2] == '1' then
  local state = redis.call('HGET', KEYS[1], 'state') or 'stopped'
  if state == 'stopped' or state == 'draining' then redis.call('HSET', KEYS[1], 'wanted', '1') end
end
return redis.call('HGET', KEYS[1], 'state') or 'stopped'
"""


async def raise_idle_deadline(redis: Redis, *, deadline: float, want: bool) -> str:
    """Move the idle deadline to ``deadline`` if later; ``want`` asks a stopped fleet to start.

    Returns the fleet's state.
    """
    state = await redis.eval(_RAISE_IDLE, 1, names.FLEET_KEY, repr(deadline), "1" if want else "0")
    return state.decode() if isinstance(state, bytes) else str(state or "stopped")
