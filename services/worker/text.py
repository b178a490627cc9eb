"""Token ids → text deltas, with stop sequences applied.

Decoding token by token breaks multi-byte characters and merges, so the
whole completion is decoded and only the stable new suffix is emitted; text
that could be the start of a stop sequence is held back until it is known
not to be one.
"""

from __future__ import annotations

from typing import Any

_REPLACEMENT = "\ufffd"


class TextStream:
    """Accumulates generated ids and hands out the text that is safe to show."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        stop: list[str],
        prefix_ids: list[int] | None = None,
        shown: int = 0,
    ) -> None:
        self._tokenizer = tokenizer
        self._stop = [s for s in stop if s]
        self._hold = max((len(s) - 1 for s in self._stop), default=0)
        self.ids: list[int] = list(prefix_ids or [])
        self.emitted = shown
        self.stopped = False

    def _decode(self) -> str:
        return self._tokenizer.decode(self.ids, skip_special_tokens=True)

    @property
    def text(self) -> str:
        """Everything emitted so far."""
        return self._decode()[: self.emitted]

    def push(self, new_ids: list[int]) -> str:
        """Add ids; return the new text that may be shown now ('' if none)."""
        if self.stopped:
            return ""
        self.ids.extend(new_ids)
        full = self._decode()
        for stop in self._stop:
            at = full.find(stop, max(0, self.emitted - len(stop) + 1))
            if at != -1:
                self.stopped = True
                delta = full[self.emitted : at]
                self.emitted = max(self.emitted, at)
                return delta
        end = len(full)
        while end > self.emitted and full[end - 1] == _REPLACEMENT:
            end -= 1  # an incomplete multi-byte character: wait for its other bytes
        end = max(self.emitted, end - self._hold)
        delta = full[self.emitted : end]
        self.emitted = end
        return delta

    def flush(self) -> str:
        """At the end: release held-back text (it did not become a stop sequence)."""
        if self.stopped:
            return ""
        full = self._decode()
        delta = full[self.emitted :]
        self.emitted = len(full)
        return delta
