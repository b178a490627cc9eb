"""Usage and cost in Redis, as the gateway reads them (the worker's ``metering`` writes them)."""

from __future__ import annotations

import dataclasses

import msgspec
from redis.asyncio import Redis

from services.protocol import names
from services.protocol.names import UsageField
from services.protocol.periods import day_label, month_label


class UsageTotals(msgspec.Struct, kw_only=True, frozen=True):
    """Counters for one subject (or the environment) over one period."""

    jobs: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    gpu_seconds: float = 0.0
    estimated_cost_usd: float = 0.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Budget:
    """Month-to-date GPU cost against the environment's thresholds (0 = none)."""

    month_to_date_usd: float
    warn_usd: float
    hard_stop_usd: float

    @property
    def status(self) -> str:
        """``ok``, ``warning`` (past the warning threshold) or ``exhausted`` (hard stop)."""
        if self.hard_stop_usd > 0 and self.month_to_date_usd >= self.hard_stop_usd:
            return "exhausted"
        if self.warn_usd > 0 and self.month_to_date_usd >= self.warn_usd:
            return "warning"
        return "ok"


def cost_of(gpu_seconds: float, *, hourly_price_usd: float) -> float:
    """Dollars for GPU seconds at an hourly price."""
    return round(gpu_seconds * hourly_price_usd / 3600.0, 6)


def _num(fields: dict[bytes, bytes], name: str) -> float:
    raw = fields.get(name.encode())
    return float(raw) if raw is not None else 0.0


async def read_totals(redis: Redis, *, scope: str, period: str, price: float) -> UsageTotals:
    """One scope's counters for one period."""
    fields = await redis.hgetall(names.usage_key(scope=scope, period=period))
    gpu = _num(fields, UsageField.GPU_SECONDS)
    return UsageTotals(
        jobs=int(_num(fields, UsageField.JOBS)),
        prompt_tokens=int(_num(fields, UsageField.PROMPT_TOKENS)),
        completion_tokens=int(_num(fields, UsageField.COMPLETION_TOKENS)),
        gpu_seconds=round(gpu, 3),
        estimated_cost_usd=cost_of(gpu, hourly_price_usd=price),
    )


async def gpu_seconds(redis: Redis, *, period: str) -> float:
    """Metered GPU seconds (from worker heartbeats) in a period."""
    raw = await redis.get(names.gpu_seconds_key(period))
    return float(raw) if raw is not None else 0.0


async def read_budget(
    redis: Redis, *, now: float, price: float, warn_usd: float, hard_stop_usd: float
) -> Budget:
    """The month-to-date cost of the whole fleet against the thresholds."""
    seconds = await gpu_seconds(redis, period=month_label(now))
    return Budget(
        month_to_date_usd=cost_of(seconds, hourly_price_usd=price),
        warn_usd=warn_usd,
        hard_stop_usd=hard_stop_usd,
    )


async def subject_usage(
    redis: Redis, *, subject: str, now: float, price: float
) -> tuple[UsageTotals, UsageTotals]:
    """(today, this month) for one subject."""
    scope = names.subject_scope(subject)
    today = await read_totals(redis, scope=scope, period=day_label(now), price=price)
    month = await read_totals(redis, scope=scope, period=month_label(now), price=price)
    return today, month


async def all_subjects(redis: Redis, *, now: float, price: float) -> dict[str, UsageTotals]:
    """This month's totals per subject (operator view)."""
    period = month_label(now)
    subjects = sorted(s.decode() for s in await redis.smembers(names.usage_subjects_key(period)))
    return {
        s: await read_totals(redis, scope=names.subject_scope(s), period=period, price=price)
        for s in subjects
    }
