"""The ARQ job: one request through the engine, published event by event.

At-least-once safe: a re-run (after a crash) resumes from the tokens the
earlier run already published, and the final result is written once. A job
whose runs kill their worker is not run a third time, and a job whose events
Redis cannot take ends with an error: every job ends with an event a client sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from arq.constants import retry_key_prefix
from redis.asyncio import Redis

from services.protocol import names
from services.protocol.fleet import raise_idle_deadline
from services.protocol.messages import (
    ChatMessage,
    DoneEvent,
    ErrorEvent,
    GenerateRequest,
    GenerateResult,
    JobPayload,
    StatusEvent,
    Timings,
    TokenEvent,
    Usage,
)
from services.protocol.serializer import decode_payload
from services.worker.backends import ServingEngine
from services.worker.engine import EngineError, Sampling
from services.worker.leases import Leases
from services.worker.metering import record_job
from services.worker.outage import REDIS_DOWN, DeliveryFailed, retry_redis
from services.worker.publisher import EventPublisher
from services.worker.settings import WorkerSettings
from services.worker.text import TextStream

log = logging.getLogger("tinyllama.worker.runner")

# A job is run at most this often. ARQ counts pickups (``job_try``) and a run that a drain
# hands back gives its pickup back, so earlier pickups are runs that took their worker down
# (kill -9, out of memory): past this many, the job fails instead of killing another one.
MAX_RUNS = 2


def encode_prompt(
    tokenizer: Any, request: GenerateRequest, *, messages: list[ChatMessage] | None = None
) -> list[int]:
    """Prompt text → ids; chat turns (or ``chat: true``) go through the chat template."""
    turns = [{"role": m.role, "content": m.content} for m in messages or []]
    if not turns and request.chat:
        turns = [{"role": "user", "content": request.prompt}]
    if turns and getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    if turns:  # a model without a template: plain "role: content" lines
        text = "".join(f"{t['role']}: {t['content']}\n" for t in turns) + "assistant: "
        return list(tokenizer(text, add_special_tokens=True)["input_ids"])
    return list(tokenizer(request.prompt, add_special_tokens=True)["input_ids"])


async def _cancel_requested(redis: Redis, job_id: str) -> bool:
    return bool(await redis.exists(names.cancel_key(job_id)))


async def run_job(
    ctx: dict[str, Any],
    payload: dict[str, Any],
    *,
    engine: ServingEngine,
    leases: Leases,
    worker_id: str,
    ttl_s: int,
    queue_name: str = names.QUEUE_NAME,
    delivery_timeout_s: float = WorkerSettings.delivery_timeout_s,
) -> str:
    """Run one job to its end; return its final status (ARQ stores it as the result)."""
    redis: Redis = ctx["redis"]
    job = decode_payload(payload)
    arq_id = ctx.get("job_id", job.job_id)
    publisher = EventPublisher(
        redis,
        job.job_id,
        ttl_s=ttl_s,
        queue_name=queue_name,
        writer=ctx.get("stream_writer"),
        delivery_timeout_s=delivery_timeout_s,
    )
    await leases.take(redis, arq_id)
    try:
        return await _run(
            redis,
            job,
            engine=engine,
            worker_id=worker_id,
            publisher=publisher,
            job_try=ctx.get("job_try", 1),
        )
    except DeliveryFailed as exc:
        log.warning("job events undeliverable: %s", exc, extra={"job_id": job.job_id})
        message = f"the job's events could not be delivered: {exc}"
        await publisher.finish(ErrorEvent(code="delivery_failed", message=message))
        return "failed"
    except Exception as exc:
        # A bug or an outage must still end the client's stream with a clear error.
        log.exception("job failed", extra={"job_id": job.job_id})
        await publisher.finish(
            ErrorEvent(code="internal", message=f"the worker failed: {type(exc).__name__}")
        )
        return "failed"
    finally:
        leases.release(arq_id)


async def _run(
    redis: Redis,
    job: JobPayload,
    *,
    engine: ServingEngine,
    worker_id: str,
    publisher: EventPublisher,
    job_try: int,
) -> str:
    started = time.time()
    if await publisher.final() is not None:
        return "done-before"  # an earlier run finished it; nothing to add
    if job_try > MAX_RUNS:
        crashes = job_try - 1
        times = "twice" if crashes == 2 else f"{crashes} times"
        log.error("job crashed its worker %s: not run again", times, extra={"job_id": job.job_id})
        await publisher.finish(
            ErrorEvent(
                code="worker_crashed",
                message=f"the job crashed the worker {times}; it is not run again",
                status="failed",
            )
        )
        return "failed"
    if started > job.deadline:
        await publisher.finish(
            ErrorEvent(code="expired", message="the job waited past its deadline", status="expired")
        )
        return "expired"
    if await _retry(lambda: _cancel_requested(redis, job.job_id), "cancel check", publisher):
        await publisher.finish(
            ErrorEvent(code="cancelled", message="cancelled before it started", status="cancelled")
        )
        return "cancelled"
    await publisher.publish(StatusEvent(status="running", worker=worker_id))
    try:
        return await _generate(redis, job, engine=engine, publisher=publisher, started=started)
    except asyncio.CancelledError:
        await asyncio.shield(
            _cancelled(redis, job, engine=engine, publisher=publisher, started=started)
        )
        raise


async def _cancelled(
    redis: Redis,
    job: JobPayload,
    *,
    engine: ServingEngine,
    publisher: EventPublisher,
    started: float,
) -> None:
    """Abort (DELETE /jobs/…, client gone) or shutdown? Only an abort ends the job here.

    On shutdown ARQ re-queues it and another run resumes it; this run gives its pickup
    back, since its worker did not crash. With Redis away it is taken for a shutdown.
    """
    try:
        if await _cancel_requested(redis, job.job_id):
            await _finish_cancelled(redis, job, engine=engine, publisher=publisher, started=started)
        else:
            await redis.decr(retry_key_prefix + job.job_id)
    except (*REDIS_DOWN, DeliveryFailed) as exc:
        log.warning("job cancelled with Redis away: %s", exc, extra={"job_id": job.job_id})


async def _finish_cancelled(
    redis: Redis,
    job: JobPayload,
    *,
    engine: ServingEngine,
    publisher: EventPublisher,
    started: float,
) -> None:
    ids, _, _ = await publisher.previous_tokens()
    tokenizer = engine.loaded.tokenizer
    text = TextStream(tokenizer, stop=[], prefix_ids=ids)
    result = _result(
        job,
        engine=engine,
        text=text.flush(),
        finish="cancelled",
        prompt_tokens=len(encode_prompt(tokenizer, job.request, messages=job.messages)),
        completion_tokens=len(ids),
        started=started,
        first=None,
    )
    if await publisher.finish(DoneEvent(result=result)):
        await _meter(redis, job, result=result, engine=engine, publisher=publisher)


def _result(
    job: JobPayload,
    *,
    engine: ServingEngine,
    text: str,
    finish: str,
    prompt_tokens: int,
    completion_tokens: int,
    started: float,
    first: float | None,
) -> GenerateResult:
    now = time.time()
    return GenerateResult(
        text=text,
        finish_reason=finish,  # type: ignore[arg-type]
        model=engine.loaded.name,
        usage=Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        ),
        timings=Timings(
            queued_s=round(max(0.0, started - job.enqueued_at), 6),
            first_token_s=round(first - started, 6) if first is not None else None,
            generation_s=round(now - started, 6),
            total_s=round(now - job.enqueued_at, 6),
        ),
    )


async def _generate(
    redis: Redis,
    job: JobPayload,
    *,
    engine: ServingEngine,
    publisher: EventPublisher,
    started: float,
) -> str:
    request = job.request
    tokenizer = engine.loaded.tokenizer
    prompt_ids = encode_prompt(tokenizer, request, messages=job.messages)
    max_new = min(request.max_new_tokens, engine.settings.max_new_tokens)
    try:
        engine.check_fits(prompt_tokens=len(prompt_ids), max_new_tokens=max_new)
    except EngineError as exc:
        asked = request.max_new_tokens  # what the client sent, not the cap that was checked
        capped = f" (the request asked for {asked}; this worker caps it at {max_new})"
        message = f"{exc}{capped if asked > max_new else ''}"
        await publisher.finish(ErrorEvent(code=exc.code, message=message))
        if engine.metrics is not None:
            engine.metrics.observe_failure(exc.code)
        return "failed"
    done_ids, shown, seq = await publisher.previous_tokens()
    text = TextStream(tokenizer, stop=list(request.stop), prefix_ids=done_ids, shown=shown)
    remaining = max_new - len(done_ids)
    finish = "length"
    first: float | None = None
    eos = tokenizer.eos_token_id
    if remaining > 0:
        sampling = Sampling(
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k,
            seed=request.seed,
        )
        tokens = engine.stream(
            job.job_id, prompt_ids + done_ids, max_new_tokens=remaining, sampling=sampling
        )
        try:
            # aclosing: leaving the loop early (stop sequence, abort) frees the engine slot now,
            # not whenever the generator is garbage collected.
            async with contextlib.aclosing(tokens):
                async for new_ids in tokens:
                    first = first or time.time()
                    offset = text.emitted
                    delta = text.push(new_ids)
                    await publisher.publish(
                        TokenEvent(seq=seq, offset=offset, text=delta, token_ids=new_ids)
                    )
                    seq += 1
                    if text.stopped:
                        finish = "stop"
                        break
                    if eos is not None and new_ids and new_ids[-1] == eos:
                        finish = "stop"
        except EngineError as exc:
            await publisher.finish(ErrorEvent(code=exc.code, message=str(exc)))
            return "failed"
    tail = text.flush()
    if tail:
        await publisher.publish(TokenEvent(seq=seq, offset=text.emitted - len(tail), text=tail))
    completion = len(text.ids)
    if finish == "length" and completion < max_new:
        finish = "stop"
    result = _result(
        job,
        engine=engine,
        text=text.text,
        finish=finish,
        prompt_tokens=len(prompt_ids),
        completion_tokens=completion,
        started=started,
        first=first,
    )
    # The GPU stays warm `idle` minutes after the job's end, not after its arrival.
    idle_until = time.time() + request.idle * engine.settings.idle_unit_s
    await _best_effort(
        lambda: raise_idle_deadline(redis, deadline=idle_until, want=False),
        "idle deadline",
        publisher,
    )
    if await publisher.finish(DoneEvent(result=result)):
        if engine.metrics is not None:
            engine.metrics.observe_result(result)
        await _meter(redis, job, result=result, engine=engine, publisher=publisher)
    return "succeeded"


async def _meter(
    redis: Redis,
    job: JobPayload,
    *,
    result: GenerateResult,
    engine: ServingEngine,
    publisher: EventPublisher,
) -> None:
    """Count the job in its owner's usage: cancelled ones too, they used the GPU."""
    # This job's share of the GPU: its time divided among the sequences it ran beside.
    share = result.timings.generation_s / max(1, engine.active + 1)
    await _best_effort(
        lambda: record_job(
            redis, subject=job.subject, result=result, gpu_share_s=share, now=time.time()
        ),
        "usage record",
        publisher,
    )


async def _retry(op: Callable[[], Awaitable[Any]], what: str, publisher: EventPublisher) -> Any:
    """``op`` across a Redis blip; ``DeliveryFailed`` past the job's delivery timeout."""
    return await retry_redis(
        op,
        what=f"job {publisher.job_id}: {what}",
        give_up_after_s=publisher.delivery_timeout_s,
        logger=log,
    )


async def _best_effort(
    op: Callable[[], Awaitable[Any]], what: str, publisher: EventPublisher
) -> None:
    """Bookkeeping the job's result does not wait on for ever: retried, then skipped."""
    try:
        await _retry(op, what, publisher)
    except DeliveryFailed as exc:
        log.warning("%s skipped: %s", what, exc)
