"""The fleet state machine's rules, as a pure function of what the controller sees."""

from __future__ import annotations

from services.gateway.fleet import FleetView, Observation, decide

NOW = 1_000_000.0


def _obs(**changes) -> Observation:
    values = {
        "now": NOW,
        "queued": 0,
        "active": 0,
        "ready_workers": 0,
        "backend_running": False,
        "over_budget": False,
    }
    values.update(changes)
    return Observation(**values)


def test_stopped_fleet_starts_when_a_job_wants_it():
    """stopped + wanted → starting, with a start action."""
    decision = decide(FleetView(state="stopped", wanted=True), _obs(queued=1), start_timeout_s=60)
    assert (decision.state, decision.action) == ("starting", "start")


def test_stopped_fleet_ignores_leftover_queue_without_a_new_job():
    """After an operator stop, jobs still queued do not restart the GPU by themselves."""
    assert decide(FleetView(state="stopped"), _obs(queued=3), start_timeout_s=60) is None


def test_budget_hard_stop_blocks_starting():
    """Over budget, a wanted fleet stays stopped."""
    view = FleetView(state="stopped", wanted=True)
    assert decide(view, _obs(over_budget=True), start_timeout_s=60) is None


def test_starting_becomes_ready_on_a_ready_worker():
    """starting → ready once a worker reports a warm model."""
    view = FleetView(state="starting", changed_at=NOW - 5)
    decision = decide(view, _obs(ready_workers=1, backend_running=True), start_timeout_s=60)
    assert decision.state == "ready"


def test_start_that_never_comes_up_times_out():
    """A start that produced no running backend within the timeout falls back to stopped."""
    view = FleetView(state="starting", changed_at=NOW - 120)
    assert decide(view, _obs(), start_timeout_s=60).state == "stopped"


def test_ready_fleet_stays_warm_until_the_idle_deadline():
    """Nothing queued or running, but the idle deadline is ahead: stay ready."""
    view = FleetView(state="ready", idle_until=NOW + 30)
    assert decide(view, _obs(ready_workers=1, backend_running=True), start_timeout_s=60) is None


def test_idle_fleet_drains_and_stops():
    """Idle deadline passed with nothing queued or running → draining, stop."""
    view = FleetView(state="ready", idle_until=NOW - 1)
    decision = decide(view, _obs(ready_workers=1, backend_running=True), start_timeout_s=60)
    assert (decision.state, decision.action) == ("draining", "stop")


def test_busy_fleet_is_not_stopped_past_its_deadline():
    """Running or queued work keeps the fleet up even after the idle deadline."""
    view = FleetView(state="ready", idle_until=NOW - 100)
    for obs in (
        _obs(active=1, ready_workers=1, backend_running=True),
        _obs(queued=2, ready_workers=1, backend_running=True),
    ):
        assert decide(view, obs, start_timeout_s=60) is None


def test_budget_hard_stop_stops_a_ready_fleet():
    """Reaching the hard stop drains and stops even a busy fleet."""
    view = FleetView(state="ready", idle_until=NOW + 600)
    obs = _obs(active=3, ready_workers=1, backend_running=True, over_budget=True)
    assert decide(view, obs, start_timeout_s=60).action == "stop"


def test_draining_always_ends_in_a_stop():
    """An operator stop (state draining) is carried out by the controller."""
    decision = decide(FleetView(state="draining"), _obs(active=2), start_timeout_s=60)
    assert decision.action == "stop"
