"""Who runs in the next step: admission into slots, prefill chunks, the decode batch.

Pure bookkeeping, no torch: the generation loop asks it what to compute and
tells it what came out. Requests join at step boundaries: a waiting request
takes the lowest free slot, its prompt is prefilled in chunks (at most
``max_batch_tokens`` tokens per prefill pass, shared by the requests being
prefilled), and once its prompt is in the cache it decodes one token per
step beside everyone else.
"""

from __future__ import annotations

import dataclasses
from collections import deque

from services.worker.static.cache import SlotPool


@dataclasses.dataclass(eq=False, kw_only=True)
class Sequence:
    """One request's state on the generation thread."""

    request_id: str
    prompt: list[int]
    max_new_tokens: int
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    slot: int = -1
    prefilled: int = 0  # prompt tokens already in the cache
    generated: int = 0
    last_token: int = -1

    @property
    def in_prefill(self) -> bool:
        """True until the whole prompt is in the cache."""
        return self.prefilled < len(self.prompt)

    @property
    def position(self) -> int:
        """Where the next decode step writes ``last_token``."""
        return len(self.prompt) + self.generated - 1


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Prompt tokens ``start .. start + count`` of ``sequence``, for one prefill pass."""

    sequence: Sequence
    start: int
    count: int

    @property
    def completes(self) -> bool:
        """True if this chunk ends the prompt (its last logits give the first token)."""
        return self.start + self.count == len(self.sequence.prompt)


class Scheduler:
    """Waiting and running requests, and the slots they hold."""

    def __init__(self, *, slots: int, max_batch_tokens: int) -> None:
        self.pool = SlotPool(slots)
        self.max_batch_tokens = max(1, max_batch_tokens)
        self.waiting: deque[Sequence] = deque()
        self.running: dict[str, Sequence] = {}  # in admission order

    def add(self, sequence: Sequence) -> None:
        """Queue a request; it gets a slot at the next step boundary with one free."""
        self.waiting.append(sequence)

    def admit(self) -> list[Sequence]:
        """Move waiting requests into free slots, first come first served."""
        admitted = []
        while self.waiting and self.pool.free:
            sequence = self.waiting.popleft()
            sequence.slot = self.pool.acquire()
            self.running[sequence.request_id] = sequence
            admitted.append(sequence)
        return admitted

    def prefill_chunks(self) -> list[Chunk]:
        """The next prefill pass: rows padded to the longest chunk, within the token budget."""
        chunks: list[Chunk] = []
        width = 0
        for sequence in self.running.values():
            if not sequence.in_prefill:
                continue
            count = min(len(sequence.prompt) - sequence.prefilled, self.max_batch_tokens)
            if chunks and (len(chunks) + 1) * max(width, count) > self.max_batch_tokens:
                break
            chunks.append(Chunk(sequence, sequence.prefilled, count))
            width = max(width, count)
        return chunks

    def decoding(self) -> list[Sequence]:
        """Requests whose prompt is in the cache: one token each in the next decode step."""
        return [s for s in self.running.values() if not s.in_prefill]

    def finish(self, sequence: Sequence) -> None:
        """The request ended (done or cancelled): free its slot for the next one."""
        if self.running.pop(sequence.request_id, None) is not None:
            self.pool.release(sequence.slot)

    def cancel(self, request_id: str) -> None:
        """Forget ``request_id``, waiting or running."""
        sequence = self.running.get(request_id)
        if sequence is not None:
            self.finish(sequence)
            return
        self.waiting = deque(s for s in self.waiting if s.request_id != request_id)

    def drop_all(self) -> list[Sequence]:
        """Every request, waiting or running, removed (the loop is going away)."""
        everyone = [*self.running.values(), *self.waiting]
        for sequence in list(self.running.values()):
            self.finish(sequence)
        self.waiting.clear()
        return everyone

    @property
    def idle(self) -> bool:
        """True when nothing waits and nothing runs."""
        return not self.waiting and not self.running
