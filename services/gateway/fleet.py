"""The GPU fleet: a state machine in Redis, one controller across gateway replicas.

``stopped → starting → ready → draining → stopped``. A job arriving while the
fleet is stopped asks for it (``wanted``); the fleet stays warm until the
latest idle deadline passes with nothing queued or running; an explicit stop
or the budget's hard stop drains and stops it. ``decide`` is pure; the
controller only reads, decides and acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from services.gateway.fleet_backends import FleetBackend
from services.protocol import names
from services.protocol.idle import raise_idle_deadline

log = logging.getLogger("tinyllama.gateway.fleet")
STATES = ("stopped", "starting", "ready", "draining")

_TRANSITION = """
-- KEYS: 1 fleet hash. ARGV: 1 expected state, 2 new state, 3 now, 4 reason, 5 clear wanted (1/0)
local state = redis.call('HGET', KEYS[1], 'state') or 'stopped'
if state ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'changed_at', ARGV[3], 'reason', ARGV[4])
if ARGV[5] == '1' then redis.call('HSET', KEYS[1], 'wanted', '0') end
return 1
"""

_RENEW_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class FleetView:
    """What Redis says about the fleet."""

    state: str = "stopped"
    changed_at: float = 0.0
    idle_until: float = 0.0
    wanted: bool = False
    reason: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Observation:
    """What the controller sees on one tick."""

    now: float
    queued: int
    active: int
    ready_workers: int
    backend_running: bool
    over_budget: bool


Observe = Callable[[FleetBackend], Awaitable[Observation]]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Decision:
    """What to do: the next state and whether to start or stop the backend."""

    state: str
    action: str | None = None  # "start" | "stop" | None
    reason: str = ""


def decide(view: FleetView, obs: Observation, *, start_timeout_s: float) -> Decision | None:
    """The next step of the state machine, or ``None`` to stay put."""
    if view.state == "stopped":
        if view.wanted and not obs.over_budget:
            return Decision(state="starting", action="start", reason="a job is waiting")
        return None
    if view.state == "starting":
        if obs.over_budget:
            return Decision(state="draining", action="stop", reason="budget hard stop")
        if obs.ready_workers > 0:
            return Decision(state="ready", reason="a worker is ready")
        if not obs.backend_running and obs.now - view.changed_at > start_timeout_s:
            return Decision(state="stopped", reason="the fleet did not start in time")
        return None
    if view.state == "ready":
        if obs.over_budget:
            return Decision(state="draining", action="stop", reason="budget hard stop")
        if not obs.backend_running and obs.ready_workers == 0:
            return Decision(state="stopped", reason="the fleet stopped by itself")
        if obs.queued == 0 and obs.active == 0 and obs.now >= view.idle_until:
            return Decision(state="draining", action="stop", reason="idle deadline passed")
        return None
    if view.state == "draining":
        return Decision(state="draining", action="stop", reason=view.reason or "draining")
    return Decision(state="stopped", reason=f"unknown state {view.state!r}")


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


async def read_fleet(redis: Redis) -> FleetView:
    """The fleet's state as stored."""
    raw = await redis.hgetall(names.FLEET_KEY)
    fields = {_text(k): _text(v) for k, v in raw.items()}
    return FleetView(
        state=fields.get("state") or "stopped",
        changed_at=float(fields.get("changed_at") or 0),
        idle_until=float(fields.get("idle_until") or 0),
        wanted=fields.get("wanted") == "1",
        reason=fields.get("reason", ""),
    )


async def write_state(redis: Redis, state: str, *, reason: str, clear_wanted: bool) -> None:
    """Record a state unconditionally (operator actions, tests)."""
    mapping = {"state": state, "changed_at": repr(time.time()), "reason": reason}
    if clear_wanted:
        mapping["wanted"] = "0"
    await redis.hset(names.FLEET_KEY, mapping=mapping)
    log.info("fleet %s", state, extra={"fleet_state": state, "reason": reason})


async def transition(
    redis: Redis, *, expected: str, state: str, reason: str, clear_wanted: bool
) -> bool:
    """Move from ``expected`` to ``state`` unless someone (an operator) changed it meanwhile."""
    moved = await redis.eval(
        _TRANSITION,
        1,
        names.FLEET_KEY,
        expected,
        state,
        repr(time.time()),
        reason,
        "1" if clear_wanted else "0",
    )
    if moved:
        log.info("fleet %s", state, extra={"fleet_state": state, "reason": reason})
    return bool(moved)


async def request_stop(redis: Redis) -> None:
    """The operator's stop: drain now, and do not restart for jobs already queued.

    Jobs arriving after this start the fleet again.
    """
    await redis.hset(
        names.FLEET_KEY,
        mapping={
            "state": "draining",
            "wanted": "0",
            "reason": "operator stop",
            "changed_at": repr(time.time()),
        },
    )


async def request_start(redis: Redis, *, idle_minutes: int, unit_s: float) -> None:
    """The operator's start: warm the fleet for ``idle_minutes``."""
    await raise_idle_deadline(redis, deadline=time.time() + idle_minutes * unit_s, want=True)


class FleetController:
    """Runs the state machine on a timer while holding the controller lock."""

    def __init__(
        self,
        *,
        redis: Redis,
        backend: FleetBackend,
        observe: Observe,
        tick_s: float = 0.5,
        start_timeout_s: float = 600.0,
    ) -> None:
        self._redis = redis
        self._backend = backend
        self._observe = observe
        self._tick_s = tick_s
        self._start_timeout_s = start_timeout_s
        self._token = uuid.uuid4().hex
        self.is_leader = False

    async def _hold_lock(self) -> bool:
        lease_ms = int(max(5.0, self._tick_s * 10) * 1000)
        held = await self._redis.eval(_RENEW_LOCK, 1, names.FLEET_LOCK, self._token, lease_ms)
        self.is_leader = bool(held)
        return self.is_leader

    async def tick(self) -> Decision | None:
        """One round: observe, decide, act (only the lock holder acts)."""
        if not await self._hold_lock():
            return None
        view = await read_fleet(self._redis)
        obs = await self._observe(self._backend)
        decision = decide(view, obs, start_timeout_s=self._start_timeout_s)
        if decision is None:
            return None
        if decision.action == "start":
            await write_state(self._redis, "starting", reason=decision.reason, clear_wanted=False)
            await self._backend.start()
            return decision
        if decision.action == "stop":
            if view.state != "draining":
                await write_state(
                    self._redis, "draining", reason=decision.reason, clear_wanted=False
                )
            await self._backend.stop()
            await write_state(self._redis, "stopped", reason=decision.reason, clear_wanted=True)
            return decision
        await write_state(
            self._redis,
            decision.state,
            reason=decision.reason,
            clear_wanted=decision.state == "ready",
        )
        return decision

    async def run(self) -> None:
        """Forever, until cancelled; a failing tick is logged and retried."""
        while True:
            try:
                await self.tick()
            except (ConnectionError, TimeoutError, OSError) as exc:
                log.warning("fleet tick failed: %s", exc)
            except Exception:
                log.exception("fleet tick failed")
            await asyncio.sleep(self._tick_s)

    async def release(self) -> None:
        """Give up the lock (on shutdown) so another replica takes over at once."""
        with contextlib.suppress(Exception):
            if await self._redis.get(names.FLEET_LOCK) == self._token.encode():
                await self._redis.delete(names.FLEET_LOCK)
