"""The one fleet controller across gateway replicas: observe, decide, act, on a timer.

Only the holder of the controller lock acts. ``tick`` is ``read → observe → decide →
apply``; ``apply`` writes each state with a compare-and-set, so a decision made on
a view that changed meanwhile (the operator's stop) does nothing, and the next
tick decides again on what is there now.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from services.gateway.billing.budget import BudgetGate
from services.gateway.fleet.backends import FleetBackend
from services.gateway.fleet.observe import observe
from services.gateway.fleet.rules import Decision, FleetView, Observation, backoff_s, decide
from services.gateway.fleet.store import FleetStore
from services.gateway.jobs.store import JobStore
from services.gateway.settings import GatewaySettings
from services.protocol.messages import ErrorEvent

log = logging.getLogger("tinyllama.gateway.fleet")

Observe = Callable[[FleetBackend], Awaitable[Observation]]

FLEET_STOPPED = ErrorEvent(
    code="fleet_stopped",
    message="an operator stopped the GPU fleet before the job ran; submit it again",
)
BUDGET_EXHAUSTED = ErrorEvent(
    code="budget_exhausted",
    message="the month's GPU budget is spent; the job was not run",
)


class FleetController:
    """Runs the state machine on a timer while holding the controller lock."""

    def __init__(
        self,
        *,
        fleet: FleetStore,
        jobs: JobStore,
        backend: FleetBackend,
        observe: Observe,
        tick_s: float = 0.5,
        start_timeout_s: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fleet = fleet
        self._jobs = jobs
        self._backend = backend
        self._observe = observe
        self._tick_s = tick_s
        self._start_timeout_s = start_timeout_s
        self._clock = clock
        self._token = uuid.uuid4().hex
        self.is_leader = False

    async def _hold_lock(self) -> bool:
        self.is_leader = await self._fleet.hold_lock(
            token=self._token, lease_s=max(5.0, self._tick_s * 10)
        )
        return self.is_leader

    async def look(self) -> tuple[FleetView, Observation, Decision | None]:
        """What the fleet is, what the controller sees, and what it would do."""
        view = await self._fleet.read()
        obs = await self._observe(self._backend)
        return view, obs, decide(view, obs, start_timeout_s=self._start_timeout_s)

    async def tick(self) -> Decision | None:
        """One round: look, then act (only the lock holder acts)."""
        if not await self._hold_lock():
            return None
        await self._jobs.reap(now=self._clock())
        view, _, decision = await self.look()
        if decision is None:
            return None
        await self.apply(view, decision)
        return decision

    async def apply(self, view: FleetView, decision: Decision) -> bool:
        """Carry ``decision`` out on ``view``; False when the fleet changed under it."""
        if decision.action == "start":
            version = await self._move(view, decision)
            if version is None:
                return False
            try:
                await self._backend.start()
            except Exception as exc:  # an API error is a failed start, retried after backoff
                log.warning("fleet start failed: %s", exc)
                failed = dataclasses.replace(view, version=version, state=decision.state)
                await self._fleet.transition(
                    failed,
                    state="stopped",
                    reason=f"start failed: {type(exc).__name__}",
                    now=self._clock(),
                    failures=view.failures + 1,
                    retry_at=self._clock() + backoff_s(view.failures + 1),
                )
            return True
        if decision.action == "stop":
            return await self._stop(view, decision)
        await self._fail_queued(decision)
        return await self._move(view, decision) is not None

    async def _stop(self, view: FleetView, decision: Decision) -> bool:
        if decision.state == "draining" and view.state != "draining":
            version = await self._move(view, decision)
            if version is None:
                return False
            view = dataclasses.replace(view, version=version, state="draining")
        await self._backend.stop()
        await self._fail_queued(decision)
        final = Decision(
            state="stopped",
            reason=decision.reason,
            failures=decision.failures,
            retry_at=decision.retry_at,
        )
        return await self._move(view, final, clear_stop=True) is not None

    async def _fail_queued(self, decision: Decision) -> None:
        if decision.fail_queued is None:
            return
        event = FLEET_STOPPED if decision.fail_queued == "operator_stop" else BUDGET_EXHAUSTED
        ended = await self._jobs.fail_queued(before=decision.fail_before, event=event)
        if ended:
            log.info("failed queued jobs", extra={"jobs": ended, "code": event.code})

    async def _move(
        self, view: FleetView, decision: Decision, *, clear_stop: bool = False
    ) -> int | None:
        return await self._fleet.transition(
            view,
            state=decision.state,
            reason=decision.reason,
            now=self._clock(),
            serve_wants=decision.serve_wants,
            failures=decision.failures,
            retry_at=decision.retry_at,
            clear_stop=clear_stop,
        )

    async def run(self) -> None:
        """Forever, until cancelled; a failing tick is logged and retried."""
        while True:
            try:
                await self.tick()
            except (RedisError, ConnectionError, TimeoutError, OSError) as exc:
                log.warning("fleet tick failed: %s", exc)
            except Exception:
                log.exception("fleet tick failed")
            await asyncio.sleep(self._tick_s)

    async def release(self) -> None:
        """Give up the lock (on shutdown) so another replica takes over at once."""
        with contextlib.suppress(Exception):
            await self._fleet.release_lock(token=self._token)


def build_controller(
    *,
    fleet: FleetStore,
    jobs: JobStore,
    backend: FleetBackend,
    budget: BudgetGate,
    settings: GatewaySettings,
    clock: Callable[[], float] = time.time,
) -> FleetController:
    """The controller a gateway runs, observing with ``clock``'s time."""

    async def look(b: FleetBackend) -> Observation:
        return await observe(
            jobs=jobs,
            backend=b,
            budget=budget,
            heartbeat_max_age_s=settings.heartbeat_max_age_s,
            now=clock(),
        )

    return FleetController(
        fleet=fleet,
        jobs=jobs,
        backend=backend,
        observe=look,
        tick_s=settings.fleet_tick_s,
        start_timeout_s=settings.fleet_start_timeout_s,
        clock=clock,
    )
