"""The static KV cache: a fixed number of slots, each as long as the longest request.

Keys and values are ``[layers, slots, kv_heads, slot_len + 1, head_dim]``,
allocated once, so every decode step has the same shapes (what a CUDA graph
needs). A slot is one request; its length lives with the request (the
scheduler's ``Sequence``), and attention masks everything past it, so a
reused slot never sees its previous request's keys. The one extra position
per slot is scratch: rows of a padded batch that hold no request write there,
and no mask ever lets a query read it.
"""

from __future__ import annotations

import heapq

import torch


class KVCache:
    """Keys and values of every slot, in the model's dtype, on the model's device."""

    def __init__(
        self,
        *,
        layers: int,
        slots: int,
        kv_heads: int,
        slot_len: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        shape = (layers, slots, kv_heads, slot_len + 1, head_dim)
        # Zeros, not empty: masked positions still enter the attention matmul (times 0),
        # and 0 * NaN from uninitialised memory would be NaN.
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.slots = slots
        self.slot_len = slot_len
        self.scratch = slot_len  # the position padding rows write to

    @property
    def nbytes(self) -> int:
        """Memory held by keys and values."""
        return self.k.nbytes + self.v.nbytes


class SlotPool:
    """Which slots are free; the lowest free one is handed out first.

    Lowest-first keeps the busy slots packed at the bottom, so a decode step
    covers ``0 .. highest busy`` and its padded batch stays small.
    """

    def __init__(self, slots: int) -> None:
        self._free = list(range(slots))
        heapq.heapify(self._free)
        self._busy: set[int] = set()

    def acquire(self) -> int | None:
        """A free slot, or None when all are busy."""
        if not self._free:
            return None
        slot = heapq.heappop(self._free)
        self._busy.add(slot)
        return slot

    def release(self, slot: int) -> None:
        """Give ``slot`` back (idempotent)."""
        if slot in self._busy:
            self._busy.remove(slot)
            heapq.heappush(self._free, slot)

    @property
    def free(self) -> int:
        """How many slots are free."""
        return len(self._free)

    @property
    def highest_busy(self) -> int:
        """The highest busy slot, or -1."""
        return max(self._busy, default=-1)
