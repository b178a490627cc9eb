"""A model-based test of the gateway core: admission, reaping and the fleet controller.

Hypothesis drives the real job service, job store, fleet store and controller, on a
real Redis, through random interleavings of: submit, tick, a worker becoming ready,
taking and finishing jobs, dying, the operator's stop and start, the budget running
out, a tick that the operator's stop overtakes, and the clock moving on. Workers and
the backend are the only stand-ins: a worker here does in Redis exactly what a real
one does (heartbeats, ARQ's in-progress lease, the result, leaving the queue).

After every step it checks the five promises:
1. a live queued job never sits behind a stopped fleet with no start coming;
2. no job is lost: each is in the queue or has its final event, and a dead worker's
   jobs go back to the queue once its lease runs out;
3. the queue bound counts live jobs only;
4. a start that brings no ready worker ends within the start timeout, and an
   operator's start is never dropped;
5. the operator's stop wins over a tick that was already deciding.
At the end of each example, it drives the system until every job has ended.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis

from services.gateway.billing.budget import BudgetExhausted, BudgetGate
from services.gateway.fleet.controller import build_controller
from services.gateway.fleet.observe import observe
from services.gateway.fleet.rules import decide
from services.gateway.fleet.store import FleetStore
from services.gateway.jobs.hub import EventHub
from services.gateway.jobs.service import JobService, Submission
from services.gateway.jobs.store import JobStore, QueueFull
from services.gateway.metrics import GatewayMetrics
from services.gateway.settings import GatewaySettings
from services.protocol import names
from services.protocol.heartbeats import send_heartbeat, withdraw
from services.protocol.messages import (
    DoneEvent,
    GenerateRequest,
    GenerateResult,
    Heartbeat,
    Timings,
    Usage,
)
from services.protocol.periods import month_label
from services.worker.publisher import EventPublisher

START = 2_000_000_000.0  # the model's clock (seconds); Redis TTLs never come into play
LEASE_S = 3.0
DEADLINE_S = 60.0
START_TIMEOUT_S = 30.0
MAX_DEPTH = 3
RARE = st.integers(0, 3)  # a rule drawn with this acts one time in four
SETTINGS = GatewaySettings(
    jwks_url="file:///unused",
    queue_name="arq:queue:model",
    max_queue_depth=MAX_DEPTH,
    job_deadline_s=DEADLINE_S,
    heartbeat_max_age_s=2.0,
    fleet="local",
    fleet_start_timeout_s=START_TIMEOUT_S,
    idle_unit_s=10.0,
    rate_limit=1_000_000.0,
    result_ttl_s=3600,
    budget_hard_stop_usd=1.0,
    gpu_hourly_price_usd=3600.0,  # 1 GPU second = $1: one step spends the budget
)


class Clock:
    """The time every component of the model reads."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class ModelBackend:
    """The fleet backend: what would be a worker process or an ECS service."""

    name = "model"

    def __init__(self) -> None:
        self.running = False
        self.starts = 0

    async def start(self) -> None:
        """Ask for a worker."""
        self.running = True
        self.starts += 1

    async def stop(self) -> None:
        """Stop every worker."""
        self.running = False

    async def is_running(self) -> bool:
        """Whether a worker runs (or is being started)."""
        return self.running

    async def close(self) -> None:
        """Nothing to release."""


@dataclasses.dataclass
class Worker:
    """A worker the backend started: alive until it dies, ready once warm."""

    worker_id: str
    alive: bool = True
    died_at: float = 0.0
    running: set[str] = dataclasses.field(default_factory=set)


class FleetMachine(RuleBasedStateMachine):
    """The gateway core against random interleavings of clients, workers, clock and operator."""

    def __init__(self, redis_url: str) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.redis = Redis.from_url(redis_url)
        self.run(self.redis.flushdb())
        self.clock = Clock()
        self.backend = ModelBackend()
        self.jobs = JobStore(self.redis, queue_name=SETTINGS.queue_name, ttl_s=3600)
        self.fleet = FleetStore(self.redis)
        self.budget = BudgetGate(
            self.redis,
            hourly_price_usd=SETTINGS.gpu_hourly_price_usd,
            warn_usd=0.0,
            hard_stop_usd=SETTINGS.budget_hard_stop_usd,
        )
        self.service = JobService(
            store=self.jobs,
            hub=EventHub(self.redis),
            fleet=self.fleet,
            budget=self.budget,
            settings=SETTINGS,
            metrics=GatewayMetrics(),
            clock=self.clock,
        )
        self.controller = build_controller(
            fleet=self.fleet,
            jobs=self.jobs,
            backend=self.backend,
            budget=self.budget,
            settings=SETTINGS,
            clock=self.clock,
        )
        self.deadlines_key = names.deadlines_key(SETTINGS.queue_name)
        self.admitted: list[str] = []
        self.deadlines: dict[str, float] = {}
        self.workers: list[Worker] = []
        self.over_budget = False
        self.start_requested = False  # an operator's start nothing has answered yet

    def run(self, coroutine):
        """Run one coroutine on the machine's own event loop."""
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        """Drive everything to an end, check every job ended, then close."""
        try:
            self.drive_to_completion()
        finally:
            self.run(self.redis.aclose())
            self.loop.close()

    # ------------------------------------------------------------------ the model's view

    def live_worker(self) -> Worker | None:
        return next((w for w in self.workers if w.alive), None)

    def in_queue(self) -> set[str]:
        return {m.decode() for m in self.run(self.redis.zrange(SETTINGS.queue_name, 0, -1))}

    def running_ids(self) -> set[str]:
        return {j for w in self.workers for j in w.running}

    def live_count(self) -> int:
        """Jobs the bound must count: queued and within their deadline, or running."""
        now = self.clock.now
        running = self.running_ids()
        return sum(1 for j in self.in_queue() if self.deadlines[j] >= now or j in running)

    def heartbeat(self, worker: Worker) -> None:
        beat = Heartbeat(
            worker_id=worker.worker_id,
            model="model",
            device="cpu",
            ready=True,
            capacity=4,
            active_jobs=len(worker.running),
            tokens_per_s=0.0,
            sent_at=self.clock.now,
        )
        self.run(send_heartbeat(self.redis, beat, ttl_s=3600))

    # ------------------------------------------------------------------ rules

    @rule(prompt=st.sampled_from(["a", "b", "c"]))
    def submit(self, prompt: str) -> None:
        """A client submits a job."""
        live_before = self.live_count()
        state_before = self.run(self.fleet.read()).state
        outcome = self.run(self.try_submit(prompt))
        if isinstance(outcome, QueueFull):
            # 3: the bound counts live jobs only (the submit reaped the expired ones).
            assert outcome.depth == self.live_count()
            assert outcome.depth >= MAX_DEPTH
            return
        if isinstance(outcome, BudgetExhausted):
            assert self.over_budget
            return
        submission = outcome
        assert live_before < MAX_DEPTH
        self.admitted.append(submission.job_id)
        self.deadlines[submission.job_id] = submission.payload.deadline
        if state_before in ("stopped", "draining"):
            assert self.run(self.fleet.read()).wanted, "a job behind a stopped fleet asks for it"

    async def try_submit(self, prompt: str) -> Submission | QueueFull | BudgetExhausted:
        """The job service's answer: a submission, or the refusal a client would see."""
        try:
            return await self.service.submit(
                subject="u", request=GenerateRequest(prompt=prompt, idle=1)
            )
        except (QueueFull, BudgetExhausted) as refused:
            return refused

    @rule()
    def tick(self) -> None:
        """The controller's periodic tick."""
        self.run(self.controller.tick())
        self.note_answered_start()

    @rule(chance=RARE)
    def tick_overtaken_by_operator_stop(self, chance: int) -> None:
        """5: a tick decides, the operator stops the fleet, then the tick acts on its old view."""
        if chance:
            return
        view, _, decision = self.run(self.controller.look())
        if decision is None:
            return
        self.run(self.fleet.stop(now=self.clock.now))
        self.start_requested = False
        starts = self.backend.starts
        self.run(self.controller.apply(view, decision))
        after = self.run(self.fleet.read())
        assert after.state == "draining", f"a stale {decision.state!r} beat the stop"
        assert self.backend.starts == starts, "a stale decision started the backend"

    @precondition(lambda self: self.backend.running and self.live_worker() is None)
    @rule()
    def worker_becomes_ready(self) -> None:
        """The backend's worker loaded its model and says so."""
        worker = Worker(worker_id=f"w{len(self.workers)}")
        self.workers.append(worker)
        self.heartbeat(worker)

    @precondition(lambda self: self.live_worker() is not None)
    @rule()
    def worker_heartbeats(self) -> None:
        """A live worker's heartbeat (and its leases' renewal)."""
        self.heartbeat(self.live_worker())

    @precondition(lambda self: self.live_worker() is not None)
    @rule()
    def worker_takes_a_job(self) -> None:
        """ARQ on the live worker takes the oldest job nobody runs (or drops it, expired)."""
        worker = self.live_worker()
        running = self.running_ids()
        for raw in self.run(self.redis.zrange(SETTINGS.queue_name, 0, -1)):
            job_id = raw.decode()
            if job_id in running:
                continue
            if self.deadlines[job_id] < self.clock.now:
                # Its ARQ record expired with the deadline: ARQ drops it and writes no event.
                self.run(self.redis.zrem(SETTINGS.queue_name, job_id))
                continue
            self.run(self.redis.set(names.arq_in_progress_key(job_id), b"1"))
            worker.running.add(job_id)
            return

    @precondition(lambda self: self.live_worker() is not None and self.live_worker().running)
    @rule(data=st.data())
    def worker_finishes_a_job(self, data) -> None:
        """A running job ends: the result written once, ARQ takes it off the queue."""
        worker = self.live_worker()
        self.finish(worker, data.draw(st.sampled_from(sorted(worker.running))))

    def finish(self, worker: Worker, job_id: str) -> None:
        """What a worker and ARQ do when a job ends."""
        worker.running.discard(job_id)
        result = GenerateResult(
            text="ok",
            finish_reason="stop",
            model="model",
            usage=Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2),
            timings=Timings(queued_s=0.0, first_token_s=0.0, generation_s=0.0, total_s=0.0),
        )
        publisher = EventPublisher(self.redis, job_id, ttl_s=3600, queue_name=SETTINGS.queue_name)
        self.run(publisher.finish(DoneEvent(result=result)))
        self.run(self.redis.zrem(SETTINGS.queue_name, job_id))
        self.run(self.redis.delete(names.arq_in_progress_key(job_id), names.arq_job_key(job_id)))

    @precondition(lambda self: self.live_worker() is not None)
    @rule(chance=RARE)
    def worker_dies(self, chance: int) -> None:
        """kill -9: no goodbye, no more heartbeats; its leases run out later."""
        if chance:
            return
        worker = self.live_worker()
        worker.alive = False
        worker.died_at = self.clock.now
        self.backend.running = False

    @precondition(lambda self: self.live_worker() is not None)
    @rule()
    def worker_drains_and_exits(self) -> None:
        """The backend stopped the worker: it withdraws; its unfinished jobs go back to ARQ."""
        if self.backend.running:
            return
        worker = self.live_worker()
        worker.alive = False
        worker.died_at = self.clock.now
        for job_id in worker.running:
            self.run(self.redis.delete(names.arq_in_progress_key(job_id)))
        worker.running.clear()
        self.run(withdraw(self.redis, worker_id=worker.worker_id))

    @rule(chance=RARE)
    def operator_stops(self, chance: int) -> None:
        """POST /gpu/stop."""
        if chance:
            return
        self.run(self.fleet.stop(now=self.clock.now))
        self.start_requested = False

    @rule()
    def operator_starts(self) -> None:
        """POST /gpu/start (refused with 402 at the hard stop)."""
        if self.over_budget:
            return
        self.run(self.fleet.start(idle_deadline=self.clock.now + 50))
        self.start_requested = True
        assert self.run(self.fleet.read()).wanted, "an operator's start was not recorded"

    @precondition(lambda self: not self.over_budget)
    @rule(chance=st.integers(0, 9))
    def budget_runs_out(self, chance: int) -> None:
        """The month's GPU cost reaches the hard stop (rarely: it ends the example's story)."""
        if chance:
            return
        self.run(self.redis.incrbyfloat(names.gpu_seconds_key(month_label(time.time())), 2.0))
        self.over_budget = True

    @rule(seconds=st.sampled_from([0.5, 2.0, 5.0, 20.0, 45.0]))
    def time_passes(self, seconds: float) -> None:
        """The clock moves on; leases of dead workers run out (Redis would expire them)."""
        self.clock.now += seconds
        for worker in self.workers:
            if not worker.alive and worker.running and self.clock.now >= worker.died_at + LEASE_S:
                for job_id in worker.running:
                    self.run(self.redis.delete(names.arq_in_progress_key(job_id)))
                worker.running.clear()

    # ------------------------------------------------------------------ invariants

    def note_answered_start(self) -> None:
        if self.run(self.fleet.read()).state in ("starting", "ready"):
            self.start_requested = False

    def decision_at_retry(self):
        view = self.run(self.fleet.read())
        at = max(self.clock.now, view.retry_at)
        obs = self.run(
            observe(
                jobs=self.jobs,
                backend=self.backend,
                budget=self.budget,
                heartbeat_max_age_s=SETTINGS.heartbeat_max_age_s,
                now=at,
            )
        )
        return view, obs, decide(view, obs, start_timeout_s=START_TIMEOUT_S)

    @invariant()
    def queued_jobs_are_never_stranded(self) -> None:
        """1: live jobs behind a stopped fleet: the next due tick starts it (or fails them)."""
        if not self.admitted or self.live_count() == 0:
            return
        view, _, decision = self.decision_at_retry()
        if view.state != "stopped":
            return
        assert decision is not None, "live jobs wait behind a stopped fleet, and nothing comes"
        if self.over_budget:
            assert decision.fail_queued == "budget"
        else:
            assert decision.action == "start"

    @invariant()
    def no_job_is_lost(self) -> None:
        """2: every admitted job is queued, ended, or due to the reaper; leases run out."""
        queued = self.in_queue()
        due = {m.decode() for m in self.run(self.redis.zrange(self.deadlines_key, 0, -1))}
        for job_id in self.admitted:
            final = self.run(self.jobs.final(job_id))
            if final is not None:
                assert job_id not in queued, f"{job_id} ended but is still queued"
            else:
                assert job_id in queued or job_id in due, f"{job_id} is lost"
        for worker in self.workers:
            if not worker.alive and self.clock.now >= worker.died_at + LEASE_S:
                assert not worker.running

    @invariant()
    def starts_end_in_time_and_are_never_dropped(self) -> None:
        """4: `starting` past its timeout is ended by the next tick; a start asked stays asked."""
        view, obs, decision = self.decision_at_retry()
        if view.state == "starting" and self.clock.now - view.changed_at > START_TIMEOUT_S:
            if not self.over_budget and obs.ready_workers == 0:
                assert decision is not None
                assert decision.state == "stopped"
        if self.start_requested and not self.over_budget and view.state == "stopped":
            assert view.wanted, "an operator's start was erased"
            assert decision is not None
            assert decision.action == "start"

    # ------------------------------------------------------------------ the end

    def drive_to_completion(self) -> None:
        """Ticks, a worker that comes up and does its work, and time: every job must end."""
        for _ in range(200):
            if all(self.run(self.jobs.final(j)) is not None for j in self.admitted):
                return
            self.tick()
            if self.backend.running and self.live_worker() is None:
                self.worker_becomes_ready()
            worker = self.live_worker()
            if worker is not None:
                self.heartbeat(worker)
                self.worker_takes_a_job()
                for job_id in sorted(worker.running):
                    self.finish(worker, job_id)
            self.time_passes(2.0)
        unfinished = [j for j in self.admitted if self.run(self.jobs.final(j)) is None]
        assert not unfinished, f"jobs never ended: {unfinished}"


def test_the_gateway_core_keeps_its_promises_under_any_interleaving(redis_url):
    """Random interleavings of jobs, workers, ticks, operator and clock keep invariants 1-5."""
    run_state_machine_as_test(
        lambda: FleetMachine(redis_url),
        settings=settings(
            max_examples=150,
            stateful_step_count=50,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
