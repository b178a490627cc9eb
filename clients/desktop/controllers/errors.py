"""How a failure reads in the window."""

from __future__ import annotations

from clients.sdk import ApiError


def describe(exc: Exception) -> str:
    """A short, plain sentence for a failed call (a 402 says the budget is spent)."""
    if isinstance(exc, ApiError):
        if exc.status == 402:
            return "monthly budget reached"
        if exc.status == 403:
            return "not allowed: needs the admin scope"
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
