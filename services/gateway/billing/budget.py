"""The budget gate every new job passes: warn past the threshold, refuse at the hard stop."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from services.gateway.billing.store import Budget, read_budget

_CACHE_S = 1.0  # the month's cost moves by cents per hour: one read a second is plenty


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
        self._cached: tuple[float, Budget] | None = None  # (monotonic time, budget)

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

    async def check(self) -> str | None:
        """Raise ``BudgetExhausted`` at the hard stop; a warning text past the threshold."""
        if not self.enabled:
            return None
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < _CACHE_S:
            budget = self._cached[1]
        else:
            budget = await self.read()
            self._cached = (now, budget)
        if budget.status == "exhausted":
            raise BudgetExhausted(budget)
        if budget.status == "warning":
            return (
                f"month-to-date GPU cost ${budget.month_to_date_usd:.2f} passed the warning "
                f"threshold ${budget.warn_usd:.2f}"
            )
        return None
