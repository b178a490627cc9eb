"""What both services write into the fleet's hash: the idle deadline and requests for a worker.

The gateway's fleet store owns the state machine; jobs touch the hash in two ways
only, both here as Lua functions that scripts build on (``LuaScript.parts``):
- ``fleet_raise_idle``: a job arriving or finishing pushes the idle deadline later
  (never earlier), so the GPU stays warm ``idle`` minutes after the last job;
- ``fleet_want``: ask for a worker. It only ever increments ``wants``; the controller
  answers by moving ``served`` up to what it saw, so a request made after the
  controller looked can never be erased by it (no lost wake-up).
"""

from __future__ import annotations

from redis.asyncio import Redis

from services.protocol import names
from services.protocol.names import FleetField as F
from services.protocol.scripts import LuaScript, lua_string

STATES = names.FLEET_STATES

FLEET_LUA = f"""
local function fleet_state(fleet)
  return redis.call('HGET', fleet, {lua_string(F.STATE)}) or 'stopped'
end
local function fleet_raise_idle(fleet, deadline)
  local current = tonumber(redis.call('HGET', fleet, {lua_string(F.IDLE_UNTIL)}) or '0')
  if tonumber(deadline) > current then
    redis.call('HSET', fleet, {lua_string(F.IDLE_UNTIL)}, deadline)
  end
end
local function fleet_want(fleet)
  redis.call('HINCRBY', fleet, {lua_string(F.WANTS)}, 1)
end
local function live_workers(workers, since)
  return redis.call('ZCOUNT', workers, since, '+inf')
end
"""

_RAISE_IDLE = LuaScript(
    keys=("fleet",),
    args=("deadline", "want"),
    parts=(FLEET_LUA,),
    body="""
fleet_raise_idle(KEY.fleet, ARG.deadline)
if ARG.want == '1' then fleet_want(KEY.fleet) end
return fleet_state(KEY.fleet)
""",
)


async def raise_idle_deadline(redis: Redis, *, deadline: float, want: bool) -> str:
    """Move the idle deadline to ``deadline`` if later; ``want`` asks for a worker.

    Returns the fleet's state.
    """
    state = await _RAISE_IDLE.run(
        redis, keys={"fleet": names.FLEET_KEY}, args={"deadline": repr(deadline), "want": int(want)}
    )
    return state.decode() if isinstance(state, bytes) else str(state or "stopped")
