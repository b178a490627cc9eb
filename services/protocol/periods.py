"""Usage periods: UTC day and month labels, the keys cost and usage are counted under."""

from __future__ import annotations

import time


def day_label(now: float) -> str:
    """``2026-11-26`` for a UTC timestamp."""
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def month_label(now: float) -> str:
    """``2026-11`` for a UTC timestamp."""
    return time.strftime("%Y-%m", time.gmtime(now))
