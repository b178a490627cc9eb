"""The fleet state machine's rules, as a pure function of what the controller sees."""

from __future__ import annotations

from services.gateway.fleet.rules import FleetView, Observation, backoff_s, decide

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


def test_stopped_fleet_starts_when_a_worker_is_wanted():
    """stopped + wanted (an operator's start, nothing queued) → starting, with a start action."""
    decision = decide(FleetView(state="stopped", wanted=True), _obs(), start_timeout_s=60)
    assert (decision.state, decision.action) == ("starting", "start")
    assert decision.serve_wants


def test_queued_jobs_start_a_stopped_fleet_without_any_flag():
    """The queue is the wake-up: live jobs start a stopped fleet, nothing can erase that."""
    decision = decide(FleetView(state="stopped"), _obs(queued=3), start_timeout_s=60)
    assert (decision.state, decision.action) == ("starting", "start")


def test_a_failed_start_backs_off_before_the_next_one():
    """Before ``retry_at`` a wanted fleet stays stopped; at it, it starts."""
    view = FleetView(state="stopped", wanted=True, failures=2, retry_at=NOW + 3)
    assert decide(view, _obs(queued=1), start_timeout_s=60) is None
    assert decide(view, _obs(queued=1, now=NOW + 3), start_timeout_s=60).action == "start"


def test_budget_hard_stop_blocks_starting_and_fails_what_waits():
    """Over budget a stopped fleet stays stopped and its queued jobs are failed."""
    view = FleetView(state="stopped", wanted=True)
    assert decide(view, _obs(over_budget=True), start_timeout_s=60) is None
    decision = decide(view, _obs(over_budget=True, queued=2), start_timeout_s=60)
    assert decision.action is None
    assert decision.fail_queued == "budget"


def test_starting_becomes_ready_on_a_ready_worker():
    """starting → ready once a worker reports a warm model; the failure count resets."""
    view = FleetView(state="starting", changed_at=NOW - 5, failures=3)
    decision = decide(view, _obs(ready_workers=1, backend_running=True), start_timeout_s=60)
    assert (decision.state, decision.failures) == ("ready", 0)


def test_a_start_whose_workers_exit_fails_at_once():
    """The backend runs nothing any more while starting: a failed start, with backoff."""
    view = FleetView(state="starting", changed_at=NOW - 1, failures=1)
    decision = decide(view, _obs(), start_timeout_s=900)
    assert (decision.state, decision.action) == ("stopped", "stop")
    assert decision.failures == 2
    assert decision.retry_at == NOW + backoff_s(2)
    assert "start failed" in decision.reason


def test_a_start_that_never_comes_up_times_out_and_is_stopped():
    """Running but never ready within the timeout: stopped, and the backend is told to stop."""
    view = FleetView(state="starting", changed_at=NOW - 120)
    decision = decide(view, _obs(backend_running=True), start_timeout_s=60)
    assert (decision.state, decision.action) == ("stopped", "stop")


def test_asking_again_while_starting_asks_the_backend_again():
    """/gpu/start during a start is not ignored: the backend is asked again."""
    view = FleetView(state="starting", changed_at=NOW - 5, wanted=True)
    decision = decide(view, _obs(backend_running=True), start_timeout_s=60)
    assert (decision.state, decision.action) == ("starting", "start")


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


def test_a_ready_fleet_whose_workers_exited_is_stopped_for_a_restart():
    """The backend runs nothing: stopped at once (no backoff), so queued jobs restart it."""
    view = FleetView(state="ready", idle_until=NOW + 600)
    decision = decide(view, _obs(queued=1, ready_workers=1), start_timeout_s=60)
    assert (decision.state, decision.retry_at) == ("stopped", NOW)


def test_budget_hard_stop_stops_a_ready_fleet():
    """Reaching the hard stop drains and stops even a busy fleet, and fails what waits."""
    view = FleetView(state="ready", idle_until=NOW + 600)
    obs = _obs(active=3, ready_workers=1, backend_running=True, over_budget=True)
    decision = decide(view, obs, start_timeout_s=60)
    assert (decision.action, decision.fail_queued) == ("stop", "budget")


def test_an_operator_stop_fails_the_jobs_queued_before_it():
    """draining after an operator stop: stop, and end jobs queued before the stop."""
    view = FleetView(state="draining", stop_at=NOW - 2, reason="operator stop")
    decision = decide(view, _obs(active=2, queued=3), start_timeout_s=60)
    assert decision.action == "stop"
    assert (decision.fail_queued, decision.fail_before) == ("operator_stop", NOW - 2)


def test_an_idle_drain_fails_nothing():
    """draining for idleness: stop, and every job queued meanwhile restarts the fleet."""
    decision = decide(FleetView(state="draining"), _obs(queued=1), start_timeout_s=60)
    assert (decision.action, decision.fail_queued) == ("stop", None)
