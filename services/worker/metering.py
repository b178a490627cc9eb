"""What the GPU did, counted in Redis: GPU seconds per period and usage per subject.

GPU seconds come from the worker's own clock between heartbeats (the time
it holds a GPU, busy or not: that is what the bill counts). Per-job usage is
recorded once, by the run that wrote the job's result.
"""

from __future__ import annotations

from redis.asyncio import Redis

from services.protocol import names
from services.protocol.messages import GenerateResult
from services.protocol.names import UsageField
from services.protocol.periods import day_label, month_label

USAGE_TTL_S = 400 * 86_400  # keep a bit more than a year of counters


async def add_gpu_seconds(redis: Redis, seconds: float, *, now: float) -> None:
    """Add metered GPU time to the day's and the month's counters."""
    if seconds <= 0:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for period in (day_label(now), month_label(now)):
            key = names.gpu_seconds_key(period)
            pipe.incrbyfloat(key, round(seconds, 6))
            pipe.expire(key, USAGE_TTL_S)
        await pipe.execute()


async def record_job(
    redis: Redis, *, subject: str, result: GenerateResult, gpu_share_s: float, now: float
) -> None:
    """Count one finished job for its subject and for the environment, by day and month."""
    async with redis.pipeline(transaction=False) as pipe:
        for period in (day_label(now), month_label(now)):
            for scope in (names.subject_scope(subject), names.ENV_SCOPE):
                key = names.usage_key(scope=scope, period=period)
                pipe.hincrby(key, UsageField.JOBS, 1)
                pipe.hincrby(key, UsageField.PROMPT_TOKENS, result.usage.prompt_tokens)
                pipe.hincrby(key, UsageField.COMPLETION_TOKENS, result.usage.completion_tokens)
                pipe.hincrbyfloat(key, UsageField.GPU_SECONDS, round(gpu_share_s, 6))
                pipe.expire(key, USAGE_TTL_S)
            pipe.sadd(names.usage_subjects_key(period), subject)
            pipe.expire(names.usage_subjects_key(period), USAGE_TTL_S)
        await pipe.execute()
