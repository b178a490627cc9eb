"""The budget gate every new job passes: warn past the threshold, refuse at the hard stop."""

from __future__ import annotations

import time

from services.gateway.problems import Problem
from services.gateway.state import GatewayState
from services.gateway.usage import Budget, read_budget


async def read_state_budget(state: GatewayState) -> Budget:
    """This month's GPU cost against the configured thresholds."""
    s = state.settings
    return await read_budget(
        state.redis,
        now=time.time(),
        price=s.gpu_hourly_price_usd,
        warn_usd=s.budget_warn_usd,
        hard_stop_usd=s.budget_hard_stop_usd,
    )


def budget_problem(budget: Budget) -> Problem:
    """The 402 a client gets once the month's budget is spent."""
    return Problem(
        402,
        "budget-exhausted",
        "The GPU budget for this month is spent",
        detail=(
            f"month-to-date GPU cost ${budget.month_to_date_usd:.2f} reached the hard stop "
            f"${budget.hard_stop_usd:.2f}; new jobs are refused and the GPU is stopped until "
            "an operator raises the budget"
        ),
    )


_CACHE_S = 1.0  # the month's cost moves by cents per hour: one read a second is plenty


async def check_budget(state: GatewayState) -> str | None:
    """Refuse new work at the hard stop; return a warning text past the warning threshold."""
    if state.settings.budget_warn_usd <= 0 and state.settings.budget_hard_stop_usd <= 0:
        return None
    now = time.monotonic()
    cached = state.budget_cache
    if cached is not None and now - cached[0] < _CACHE_S:
        budget = cached[1]
    else:
        budget = await read_state_budget(state)
        state.budget_cache = (now, budget)
    if budget.status == "exhausted":
        raise budget_problem(budget)
    if budget.status == "warning":
        return (
            f"month-to-date GPU cost ${budget.month_to_date_usd:.2f} passed the warning "
            f"threshold ${budget.warn_usd:.2f}"
        )
    return None
