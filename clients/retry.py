"""When the SDK tries a request again, and how long it waits first (pure, no I/O)."""

from __future__ import annotations

import dataclasses
import email.utils
import time

RETRY_STATUSES = frozenset({429, 503})


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Retries after 429, 503 and connection errors: 0.5, 1 and 2 s, or ``Retry-After``.

    A ``Retry-After`` longer than ``max_wait_s`` is not waited out: the caller gets
    the error at once rather than a call that hangs for minutes.
    """

    backoff_s: tuple[float, ...] = (0.5, 1.0, 2.0)
    max_wait_s: float = 30.0

    @property
    def retries(self) -> int:
        """How many times a call is tried again after its first try."""
        return len(self.backoff_s)

    def delay(self, attempt: int, *, retry_after: float | None) -> float | None:
        """Seconds to wait before retry ``attempt`` (0-based), or None to give up."""
        if attempt >= len(self.backoff_s):
            return None
        wait = self.backoff_s[attempt] if retry_after is None else max(retry_after, 0.0)
        return wait if wait <= self.max_wait_s else None


NO_RETRIES = RetryPolicy(backoff_s=())


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
