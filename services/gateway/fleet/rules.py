"""The fleet's state machine as a pure function: what the controller sees → what to do.

``stopped → starting → ready → draining → stopped``. The queue itself is the
durable wake-up: live jobs in it start a stopped fleet, so no flag that a tick
might overwrite can strand them. ``wants > served`` (an operator's start, a job
that found nothing live) asks for a worker when the queue is empty. A failed
start backs off, and an operator's start clears the backoff.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

Action = Literal["start", "stop"]
FailReason = Literal["operator_stop", "budget"]
BUDGET = "budget hard stop"
MAX_BACKOFF_S = 30.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class FleetView:
    """What Redis says about the fleet."""

    state: str = "stopped"
    version: int = 0
    changed_at: float = 0.0
    reason: str = ""
    idle_until: float = 0.0
    wanted: bool = False  # a request for a worker that nothing has answered yet
    failures: int = 0  # starts in a row that produced no ready worker
    retry_at: float = 0.0
    stop_at: float = 0.0  # when the operator stopped the fleet (0: not an operator stop)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Observation:
    """What the controller sees on one tick."""

    now: float
    queued: int  # live jobs in the queue, waiting or running
    active: int  # sequences running on live workers
    ready_workers: int
    backend_running: bool
    over_budget: bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class Decision:
    """The next state, what to ask of the backend, and the bookkeeping that goes with it."""

    state: str
    reason: str
    action: Action | None = None
    serve_wants: bool = False  # this step answers every request for a worker so far
    failures: int | None = None  # new count of failed starts (None: unchanged)
    retry_at: float | None = None
    fail_queued: FailReason | None = None  # end the jobs queued before ``fail_before``
    fail_before: float = 0.0


def backoff_s(failures: int) -> float:
    """Seconds to wait before the next start after ``failures`` failed ones."""
    return min(MAX_BACKOFF_S, 2.0 ** max(0, failures))


def _failed_start(view: FleetView, obs: Observation, why: str) -> Decision:
    failures = view.failures + 1
    return Decision(
        state="stopped",
        action="stop",  # whatever half-started must not keep billing
        reason=f"start failed: {why}",
        failures=failures,
        retry_at=obs.now + backoff_s(failures),
    )


def _budget_stop(obs: Observation) -> Decision:
    """The hard stop: drain and stop, and end every job still waiting."""
    return Decision(
        state="draining", action="stop", reason=BUDGET, fail_queued="budget", fail_before=obs.now
    )


def decide(view: FleetView, obs: Observation, *, start_timeout_s: float) -> Decision | None:
    """The next step of the state machine, or ``None`` to stay put."""
    if view.state == "stopped":
        if obs.over_budget:
            if obs.queued:
                return Decision(
                    state="stopped", reason=BUDGET, fail_queued="budget", fail_before=obs.now
                )
            return None
        if (view.wanted or obs.queued > 0) and obs.now >= view.retry_at:
            why = "a job is waiting" if obs.queued else "a worker was asked for"
            return Decision(state="starting", action="start", reason=why, serve_wants=True)
        return None
    if view.state == "starting":
        if obs.over_budget:
            return Decision(state="draining", action="stop", reason=BUDGET)
        if obs.ready_workers > 0:
            return Decision(state="ready", reason="a worker is ready", serve_wants=True, failures=0)
        if not obs.backend_running:
            return _failed_start(view, obs, "the workers exited before one was ready")
        if obs.now - view.changed_at > start_timeout_s:
            return _failed_start(view, obs, f"no ready worker within {start_timeout_s:.0f} s")
        if view.wanted:  # asked again while starting (/gpu/start): ask the backend again
            return Decision(
                state="starting", action="start", reason="asked again", serve_wants=True
            )
        return None
    if view.state == "ready":
        if obs.over_budget:
            return _budget_stop(obs)
        if not obs.backend_running:
            return Decision(state="stopped", reason="the workers exited", retry_at=obs.now)
        if view.wanted and obs.ready_workers > 0:
            return Decision(state="ready", reason=view.reason, serve_wants=True)
        if obs.queued == 0 and obs.active == 0 and obs.now >= view.idle_until:
            return Decision(state="draining", action="stop", reason="idle deadline passed")
        return None
    if view.state == "draining":
        if obs.over_budget:
            return _budget_stop(obs)
        if view.stop_at:
            return Decision(
                state="draining",
                action="stop",
                reason=view.reason or "operator stop",
                fail_queued="operator_stop",
                fail_before=view.stop_at,
            )
        return Decision(state="draining", action="stop", reason=view.reason or "draining")
    return Decision(state="stopped", reason=f"unknown state {view.state!r}")
