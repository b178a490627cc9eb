"""A wrapper that keeps secure values out of logs, tracebacks and ``repr``."""

from __future__ import annotations

import hmac

MASK = "**********"


class Secret:
    """A string value that only :meth:`reveal` gives back.

    ``str``, ``repr`` and ``format`` all show a fixed mask, so a secret that
    ends up in an f-string, a log record or a settings object's ``repr`` does
    not leak. It is deliberately not a ``str`` subclass: that would let
    concatenation, ``json.dumps`` and ``str.__format__`` expose the value.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        self._value = str(value)

    def reveal(self) -> str:
        """Return the plain value; call it only where the value is used."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, format_spec: str) -> str:
        return format(MASK, format_spec)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        # Constant time, so comparing secrets does not leak them by timing.
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would write the value somewhere we do not control.
        raise TypeError("Secret values cannot be pickled")
