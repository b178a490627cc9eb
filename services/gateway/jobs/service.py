"""The job service: submit, read, wait, stream and cancel, once, for every route family.

``POST /infer`` and the OpenAI-compatible routes are thin translators over this
(as vLLM's serving classes are for its routers): they decode a body, call one of
these methods, and encode what comes back. Every behaviour lives here once: the
budget gate and admission, the ``starting`` status of a job behind a stopped fleet,
de-duplicated text across a re-run job, and "the client left, cancel the job"
whether the job was still queued or already running.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence

import msgspec
from redis.exceptions import RedisError

from services.gateway.billing.budget import BudgetExhausted, BudgetGate, budget_warning
from services.gateway.fleet.served import Served, ServedModels
from services.gateway.fleet.store import FleetStore
from services.gateway.jobs.fits import check_fits
from services.gateway.jobs.hub import EventHub, HubLost, Inbox
from services.gateway.jobs.ratelimit import RateLimit
from services.gateway.jobs.store import Admission, JobStore, JobView, OverBudget
from services.gateway.metrics import GatewayMetrics
from services.gateway.settings import GatewaySettings
from services.protocol.messages import (
    TERMINAL_STATUSES,
    ChatMessage,
    DoneEvent,
    ErrorEvent,
    GenerateRequest,
    GenerateResult,
    JobEvent,
    JobPayload,
    JobStatus,
    StatusEvent,
    TokenEvent,
)

log = logging.getLogger("tinyllama.gateway.jobs")
MAX_IDEMPOTENCY_KEY = 255
QUIET_CHECK_S = 1.0  # how often a quiet stream looks whether its client is still there
VANISH_CHECK_S = 5.0  # how often a quiet stream looks whether its job still exists
CANCEL_WAIT_S = 5.0
TIMED_OUT = ErrorEvent(code="timeout", message="the job did not finish in time", status="failed")


def _lost(job_id: str, *, status: JobStatus, reason: str) -> ErrorEvent:
    """The last event of a stream that lost the queue: the job may still finish."""
    return ErrorEvent(
        code="unavailable",
        message=f"{reason}; the job may still finish: GET /jobs/{job_id}",
        status=status,
    )


class InvalidIdempotencyKey(Exception):
    """An ``Idempotency-Key`` the gateway will not store."""


class AlreadyFinished(Exception):
    """A cancel for a job that had already ended."""

    def __init__(self, view: JobView) -> None:
        super().__init__(f"job {view.job_id} had already ended ({view.status}): nothing to cancel")
        self.view = view


class PromptTooLong(Exception):
    """The prompt (or the conversation) is longer than the gateway accepts."""

    def __init__(self, *, path: str, limit: int) -> None:
        super().__init__(f"{path} is longer than {limit} characters")
        self.path = path


@dataclasses.dataclass(frozen=True, kw_only=True)
class Submission:
    """An admitted job: its payload, whether this call created it, and any budget warning."""

    payload: JobPayload
    job_id: str
    created: bool
    budget_warning: str | None


@dataclasses.dataclass(frozen=True)
class TextDelta:
    """New text since the last delta the client saw."""

    text: str


@dataclasses.dataclass(frozen=True)
class StatusChange:
    """The job changed state (``running`` when a worker took it)."""

    status: str


Relayed = TextDelta | StatusChange | DoneEvent | ErrorEvent


class JobService:
    """One queue's jobs as clients see them."""

    def __init__(
        self,
        *,
        store: JobStore,
        hub: EventHub,
        fleet: FleetStore | None,
        budget: BudgetGate,
        settings: GatewaySettings,
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._hub = hub
        self._clock = clock
        self._fleet = fleet
        self._budget = budget
        self._settings = settings
        self._metrics = metrics
        self._rate = RateLimit(rate=settings.rate_limit, burst=max(1.0, settings.rate_limit))
        self.served = ServedModels(store.redis, max_age_s=settings.heartbeat_max_age_s, clock=clock)

    # ------------------------------------------------------------------ submit

    def check_prompt(self, chars: int, *, path: str) -> None:
        """Refuse a prompt longer than the configured limit, naming its field."""
        if chars > self._settings.max_prompt_chars:
            raise PromptTooLong(path=path, limit=self._settings.max_prompt_chars)

    async def check_fits(
        self,
        request: GenerateRequest,
        *,
        texts: Sequence[str],
        prompt_path: str,
        limit_path: str,
        served: Served | None = None,
    ) -> None:
        """Refuse what the served model cannot hold (``ContextTooLong``), before queueing.

        The served model is the live workers', or the one they served last while the fleet
        is scaled to zero (``served``, if the caller has read it already); none known, or a
        worker too old to say its context: nothing to check here (the worker checks).
        """
        model = (served or await self.served.read()).model
        if model is None or model.context_length is None:
            return
        check_fits(
            texts,
            max_new_tokens=request.max_new_tokens,
            context_length=model.context_length,
            max_token_chars=model.max_token_chars,
            model=model.name,
            prompt_path=prompt_path,
            limit_path=limit_path,
        )

    async def submit(
        self,
        *,
        subject: str,
        request: GenerateRequest,
        messages: Sequence[ChatMessage] = (),
        request_id: str = "",
        idempotency_key: str | None = None,
    ) -> Submission:
        """One admitted job, or why not, decided in one atomic step.

        Raises ``BudgetExhausted``, ``RateLimited``, ``QueueFull``, ``InvalidIdempotencyKey``
        or ``IdempotencyKeyReused``.
        """
        if idempotency_key and len(idempotency_key) > MAX_IDEMPOTENCY_KEY:  # empty: none
            raise InvalidIdempotencyKey(f"at most {MAX_IDEMPOTENCY_KEY} characters")
        now = self._clock()
        s = self._settings
        payload = JobPayload(
            job_id=os.urandom(16).hex(),  # 128 random bits, as uuid4's, without its object
            subject=subject,
            request=request,
            enqueued_at=now,
            deadline=now + s.job_deadline_s,
            request_id=request_id,
            messages=list(messages),
        )
        admission = Admission(
            max_depth=s.max_queue_depth,
            rate_limit=self._rate,
            idle_deadline=now + request.idle * s.idle_unit_s if self._fleet else None,
            live_since=now - s.heartbeat_max_age_s,
            budget=self._budget.cap(now=now),
        )
        idem = None
        if idempotency_key:
            body = msgspec.json.encode((request, list(messages)))
            idem = self.store.idempotency(subject=subject, key=idempotency_key, body=body)
        try:
            submitted = await self.store.submit(payload, admission=admission, idempotency=idem)
        except OverBudget as exc:
            raise BudgetExhausted(self._budget.judge(exc.gpu_seconds)) from None
        return Submission(
            payload=payload,
            job_id=submitted.job_id,
            created=submitted.created,
            budget_warning=budget_warning(self._budget.judge(submitted.gpu_seconds)),
        )

    # ------------------------------------------------------------------ read

    async def _behind_stopped_fleet(self) -> bool:
        return self._fleet is not None and (await self._fleet.read()).state in (
            "stopped",
            "starting",
        )

    async def read(self, job_id: str, *, subject: str) -> JobView | None:
        """A job as its owner sees it; queued behind a stopped fleet it reads ``starting``."""
        view = await self.store.read(job_id, subject=subject)
        if view is not None and view.status == "queued" and await self._behind_stopped_fleet():
            return dataclasses.replace(view, status="starting")
        return view

    async def accepted(self, submission: Submission, *, subject: str) -> JobView | None:
        """The job right after ``submit``: a job created a moment ago needs no read-back."""
        if not submission.created:
            return await self.read(submission.job_id, subject=subject)
        status = "starting" if await self._behind_stopped_fleet() else "queued"
        payload = submission.payload
        return JobView(
            job_id=submission.job_id,
            status=status,
            created_at=payload.enqueued_at,
            deadline=payload.deadline,
        )

    # ------------------------------------------------------------------ wait and stream

    def _observe(self, event: JobEvent) -> None:
        if isinstance(event, DoneEvent):
            result: GenerateResult = event.result
            m = self._metrics
            m.e2e.observe(result.timings.total_s)
            m.queue_time.observe(result.timings.queued_s)
            if result.timings.first_token_s is not None:
                m.ttft.observe(result.timings.first_token_s)

    async def wait(self, job_id: str, *, timeout_s: float | None = None) -> JobEvent | None:
        """The job's final event, or ``None`` if it is not done within the wait timeout."""
        timeout = self._settings.wait_timeout_s if timeout_s is None else timeout_s
        final = await self._final_within(job_id, timeout_s=timeout)
        if final is not None:
            self._observe(final)
        return final

    async def _final_within(self, job_id: str, *, timeout_s: float) -> JobEvent | None:
        """The final event, followed through the hub (no connection of its own) until due."""
        final = await self.store.final(job_id)
        if final is not None or timeout_s <= 0:
            return final
        due = time.monotonic() + timeout_s
        async with self._hub.follow(job_id) as inbox:
            while (remaining := due - time.monotonic()) > 0:
                for _, event in await inbox.next(timeout_s=remaining):  # HubLost: a 503
                    if isinstance(event, (DoneEvent, ErrorEvent)):
                        return event
        return None

    @contextlib.asynccontextmanager
    async def follow(
        self, job_id: str, *, subject: str, connected: Callable[[], bool]
    ) -> AsyncIterator[AsyncIterator[Relayed]]:
        """Open a client's stream of the job: ``TooManyStreams`` now, before any byte is sent.

        Leaving the block closes the relay, so a client that went away (or a consumer
        that stopped early) cancels the job at once.
        """
        async with self._hub.follow(job_id, subject=subject) as inbox:
            relay = self._relay(job_id, inbox=inbox, connected=connected)
            async with contextlib.aclosing(relay):
                yield relay

    async def _relay(
        self, job_id: str, *, inbox: Inbox, connected: Callable[[], bool]
    ) -> AsyncIterator[Relayed]:
        """The job's progress as a client shows it: deltas, status changes, one final event.

        Text a re-run job publishes again is skipped, so the client sees one coherent
        text. If the client goes away (``connected`` turns false, or the consumer stops
        early) before the final event, the job is cancelled: nobody wants the rest. If
        Redis is lost (or comes back without the job), the stream ends with an
        ``unavailable`` error carrying the last status seen; the job is not cancelled.
        """
        deadline = time.monotonic() + self._settings.job_deadline_s + 5
        shown, finished, status = 0, False, "queued"
        checked = time.monotonic()
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                try:
                    batch = await inbox.next(timeout_s=min(QUIET_CHECK_S, remaining))
                    if not batch and time.monotonic() - checked >= VANISH_CHECK_S:
                        checked = time.monotonic()
                        if not await self.store.exists(job_id):
                            raise HubLost("the job is gone from the queue")
                except (HubLost, RedisError, OSError) as exc:
                    finished = True  # not cancelled: it may still finish; GET /jobs/{id}
                    reason = str(exc) if isinstance(exc, HubLost) else "lost contact with the queue"
                    yield _lost(job_id, status=status, reason=reason)
                    return
                for _, event in batch:
                    if isinstance(event, TokenEvent):
                        end = event.offset + len(event.text)
                        if end > shown:
                            yield TextDelta(event.text[max(0, shown - event.offset) :])
                            shown = end
                    elif isinstance(event, StatusEvent):
                        status = event.status
                        yield StatusChange(event.status)
                    else:
                        finished = True
                        self._observe(event)
                        yield event
                        return
                if not batch and not connected():
                    return
            finished = True  # past the deadline: the job is left to the reaper, not cancelled
            yield TIMED_OUT
        finally:
            if not finished:
                await asyncio.shield(self._abandon(job_id))

    def end_streams(self) -> None:
        """Shutdown: open streams end now, each telling its client how to resume."""
        self._hub.close()

    async def _abandon(self, job_id: str) -> None:
        with contextlib.suppress(Exception):
            outcome = await self.store.cancel(job_id)
            log.info("client left: job cancelled", extra={"job_id": job_id, "outcome": outcome})

    # ------------------------------------------------------------------ cancel

    async def cancel(self, job_id: str, *, subject: str) -> tuple[JobView, bool] | None:
        """Cancel the caller's job; the job and whether it has ended (``None``: not theirs).

        A job that had already ended raises ``AlreadyFinished``: there was nothing to cancel.
        """
        view = await self.store.read(job_id, subject=subject)
        if view is None:
            return None
        if view.status in TERMINAL_STATUSES:
            raise AlreadyFinished(view)
        await self.store.cancel(job_id)
        final = await self._final_within(job_id, timeout_s=CANCEL_WAIT_S)
        view = await self.store.read(job_id, subject=subject) or view
        return view, final is not None or view.status in TERMINAL_STATUSES
