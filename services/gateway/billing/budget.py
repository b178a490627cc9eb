"""The budget gate every new job passes: warn past the threshold, refuse at the hard stop.

The refusal happens inside the admission script (``BudgetCap``), in the same atomic
step that queues the job: no job is admitted once the metered cost reached the stop,
however many gateways race for it.
"""

from __future__ import annotations

import dataclasses
import time

from redis.asyncio import Redis

from services.gateway.billing.store import Budget, cost_of, read_budget
from services.protocol import names
from services.protocol.periods import month_label


@dataclasses.dataclass(frozen=True, kw_only=True)
class BudgetCap:
    """The month's metered GPU seconds (``key``) may not reach the hard stop at this price."""

    key: str
    hourly_price_usd: float
    hard_stop_usd: float  # 0: no stop, only a warning threshold


class BudgetExhausted(Exception):
    """The month's GPU budget is spent: no new work until an operator raises it."""

    def __init__(self, budget: Budget) -> None:
        super().__init__(
            f"month-to-date GPU cost ${budget.month_to_date_usd:.2f} reached the hard stop "
            f"${budget.hard_stop_usd:.2f}; new jobs are refused and the GPU is stopped until "
            "an operator raises the budget"
        )
        self.budget = budget


class BudgetGate:
    """This month's GPU cost against the environment's thresholds."""

    def __init__(
        self, redis: Redis, *, hourly_price_usd: float, warn_usd: float, hard_stop_usd: float
    ) -> None:
        self._redis = redis
        self._price = hourly_price_usd
        self._warn = warn_usd
        self._hard_stop = hard_stop_usd

    @property
    def enabled(self) -> bool:
        """False when no threshold is set: nothing to read per request."""
        return self._warn > 0 or self._hard_stop > 0

    async def read(self) -> Budget:
        """The budget now (no cache)."""
        return await read_budget(
            self._redis,
            now=time.time(),
            price=self._price,
            warn_usd=self._warn,
            hard_stop_usd=self._hard_stop,
        )

    def cap(self, *, now: float) -> BudgetCap | None:
        """What admission checks atomically: this month's metered seconds against the stop."""
        if not self.enabled:
            return None
        return BudgetCap(
            key=names.gpu_seconds_key(month_label(now)),
            hourly_price_usd=self._price,
            hard_stop_usd=self._hard_stop,
        )

    def judge(self, gpu_seconds: float) -> Budget:
        """The budget at ``gpu_seconds`` metered this month."""
        return Budget(
            month_to_date_usd=cost_of(gpu_seconds, hourly_price_usd=self._price),
            warn_usd=self._warn,
            hard_stop_usd=self._hard_stop,
        )


def budget_warning(budget: Budget) -> str | None:
    """The ``X-Budget-Warning`` text past the warning threshold (``None`` below it)."""
    if budget.status != "warning":
        return None
    return (
        f"month-to-date GPU cost ${budget.month_to_date_usd:.2f} passed the warning "
        f"threshold ${budget.warn_usd:.2f}"
    )
