"""The fleet's hash in Redis: the one module that writes its state.

Every state change is a compare-and-set on ``version``: a tick that decided on an
older view changes nothing, so an operator's stop made meanwhile always wins.
Requests for a worker only ever add to ``wants`` (``services.protocol.fleet``); a
transition marks them served by copying the count it saw, never by erasing.
"""

from __future__ import annotations

import logging
import time

from redis.asyncio import Redis

from services.gateway.fleet.rules import FleetView
from services.protocol import names
from services.protocol.fleet import FLEET_LUA
from services.protocol.names import FleetField as F
from services.protocol.scripts import LuaScript, as_text, lua_string

log = logging.getLogger("tinyllama.gateway.fleet")


def _q(field: str) -> str:
    return lua_string(field)


_TRANSITION = LuaScript(
    keys=("fleet",),
    args=("version", "state", "now", "reason", "serve", "failures", "retry_at", "clear_stop"),
    body=f"""
-- Returns the new version, or 0 when the fleet changed since the caller looked.
local version = tonumber(redis.call('HGET', KEY.fleet, {_q(F.VERSION)}) or '0')
if version ~= tonumber(ARG.version) then return 0 end
version = version + 1
redis.call('HSET', KEY.fleet, {_q(F.STATE)}, ARG.state, {_q(F.VERSION)}, version,
  {_q(F.CHANGED_AT)}, ARG.now, {_q(F.REASON)}, ARG.reason)
if ARG.serve == '1' then
  redis.call('HSET', KEY.fleet, {_q(F.SERVED)}, redis.call('HGET', KEY.fleet, {_q(F.WANTS)}) or '0')
end
if ARG.failures ~= '' then redis.call('HSET', KEY.fleet, {_q(F.FAILURES)}, ARG.failures) end
if ARG.retry_at ~= '' then redis.call('HSET', KEY.fleet, {_q(F.RETRY_AT)}, ARG.retry_at) end
if ARG.clear_stop == '1' then redis.call('HDEL', KEY.fleet, {_q(F.STOP_AT)}) end
return version
""",
)

_OPERATOR_STOP = LuaScript(
    keys=("fleet",),
    args=("now", "reason"),
    body=f"""
-- Drain now; every request for a worker made so far is answered by this stop.
local version = tonumber(redis.call('HGET', KEY.fleet, {_q(F.VERSION)}) or '0') + 1
redis.call('HSET', KEY.fleet, {_q(F.STATE)}, 'draining', {_q(F.VERSION)}, version,
  {_q(F.CHANGED_AT)}, ARG.now, {_q(F.REASON)}, ARG.reason, {_q(F.STOP_AT)}, ARG.now,
  {_q(F.SERVED)}, redis.call('HGET', KEY.fleet, {_q(F.WANTS)}) or '0')
return version
""",
)

_OPERATOR_START = LuaScript(
    keys=("fleet",),
    args=("idle_deadline",),
    parts=(FLEET_LUA,),
    body=f"""
-- Ask for a worker now: no backoff left over from failed starts stands in the way.
fleet_raise_idle(KEY.fleet, ARG.idle_deadline)
fleet_want(KEY.fleet)
redis.call('HSET', KEY.fleet, {_q(F.RETRY_AT)}, '0')
return fleet_state(KEY.fleet)
""",
)


_HOLD_LOCK = LuaScript(
    keys=("lock",),
    args=("token", "lease_ms"),
    body="""
if redis.call('GET', KEY.lock) == ARG.token then
  return redis.call('PEXPIRE', KEY.lock, ARG.lease_ms)
end
return redis.call('SET', KEY.lock, ARG.token, 'NX', 'PX', ARG.lease_ms) and 1 or 0
""",
)

_RELEASE_LOCK = LuaScript(
    keys=("lock",),
    args=("token",),
    body="""
if redis.call('GET', KEY.lock) == ARG.token then return redis.call('DEL', KEY.lock) end
return 0
""",
)


class FleetStore:
    """Reads and changes the fleet's state."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def read(self) -> FleetView:
        """The fleet's state as stored."""
        raw = await self.redis.hgetall(names.FLEET_KEY)
        fields = {as_text(k): as_text(v) for k, v in raw.items()}

        def number(field: str) -> float:
            return float(fields.get(field) or 0)

        return FleetView(
            state=fields.get(F.STATE) or "stopped",
            version=int(number(F.VERSION)),
            changed_at=number(F.CHANGED_AT),
            reason=fields.get(F.REASON, ""),
            idle_until=number(F.IDLE_UNTIL),
            wanted=number(F.WANTS) > number(F.SERVED),
            failures=int(number(F.FAILURES)),
            retry_at=number(F.RETRY_AT),
            stop_at=number(F.STOP_AT),
        )

    async def transition(
        self,
        view: FleetView,
        *,
        state: str,
        reason: str,
        now: float,
        serve_wants: bool = False,
        failures: int | None = None,
        retry_at: float | None = None,
        clear_stop: bool = False,
    ) -> int | None:
        """Move to ``state`` if the fleet is still as ``view`` saw it; the new version or None."""
        version = await _TRANSITION.run(
            self.redis,
            keys={"fleet": names.FLEET_KEY},
            args={
                "version": view.version,
                "state": state,
                "now": repr(now),
                "reason": reason,
                "serve": int(serve_wants),
                "failures": "" if failures is None else failures,
                "retry_at": "" if retry_at is None else repr(retry_at),
                "clear_stop": int(clear_stop),
            },
        )
        if not version:
            return None
        if state != view.state:
            log.info("fleet %s", state, extra={"fleet_state": state, "reason": reason})
        return int(version)

    async def hold_lock(self, *, token: str, lease_s: float) -> bool:
        """Take or renew the one controller's lock; True while ``token`` holds it."""
        held = await _HOLD_LOCK.run(
            self.redis,
            keys={"lock": names.FLEET_LOCK},
            args={"token": token, "lease_ms": int(lease_s * 1000)},
        )
        return bool(held)

    async def release_lock(self, *, token: str) -> None:
        """Give the lock up (on shutdown) so another replica's controller takes over at once."""
        await _RELEASE_LOCK.run(self.redis, keys={"lock": names.FLEET_LOCK}, args={"token": token})

    async def stop(self, *, now: float | None = None, reason: str = "operator stop") -> None:
        """The operator's stop: drain now; jobs already queued fail instead of restarting it.

        Jobs arriving after this start the fleet again.
        """
        now = time.time() if now is None else now
        await _OPERATOR_STOP.run(
            self.redis, keys={"fleet": names.FLEET_KEY}, args={"now": repr(now), "reason": reason}
        )
        log.info("fleet draining", extra={"fleet_state": "draining", "reason": reason})

    async def start(self, *, idle_deadline: float) -> str:
        """The operator's start: ask for a worker, warm until ``idle_deadline``; the state."""
        state = await _OPERATOR_START.run(
            self.redis,
            keys={"fleet": names.FLEET_KEY},
            args={"idle_deadline": repr(idle_deadline)},
        )
        return as_text(state) or "stopped"
