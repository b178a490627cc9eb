"""The generation thread: owns the model's step, the cache and every request's state.

Each iteration is one step boundary: take new requests and cancellations,
admit waiting requests into free slots, run one prefill pass (a chunk of the
prompts being prefilled) and one decode step (every request whose prompt is
in the cache), sample, and hand the new tokens out in one batch. All torch
work happens here; the event loop only submits, cancels and receives.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

import torch

from services.worker.static.graphs import Decoder
from services.worker.static.sampling import RowParams, sample
from services.worker.static.scheduler import Chunk, Scheduler, Sequence
from services.worker.static.step import bucket_for

log = logging.getLogger("tinyllama.worker.static")

# request id -> (new tokens, finished); or, when the loop fails, request id -> exception
Emitted = dict[str, tuple[list[int], bool]]


class GenerationLoop:
    """One thread, started once; ``stop`` (or a failed step) ends it for good."""

    def __init__(
        self,
        *,
        decoder: Decoder,
        max_batch_tokens: int,
        eos: frozenset[int],
        emit: Callable[[Emitted], None],
        fail: Callable[[list[str], BaseException], None],
    ) -> None:
        self.decoder = decoder
        self.step = decoder.step
        self.cache = decoder.step.cache
        self.scheduler = Scheduler(slots=self.cache.slots, max_batch_tokens=max_batch_tokens)
        self.eos = eos
        self.emit = emit
        self.fail = fail
        self.fatal_error: BaseException | None = None
        self._commands: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="static-generation", daemon=True)

    # ------------------------------------------------------------------ the event loop's side
    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, *, timeout: float = 30.0) -> None:
        """Ask the thread to end after its current step, and wait for it."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def is_running(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive() and not self._stopping.is_set()

    def submit(self, sequence: Sequence) -> None:
        """Queue a request; it joins at the next step boundary."""
        self._commands.put(("add", sequence))
        self._wake.set()

    def cancel(self, request_id: str) -> None:
        """Free ``request_id``'s slot at the next step boundary."""
        self._commands.put(("cancel", request_id))
        self._wake.set()

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        torch.set_grad_enabled(False)
        try:
            while not self._stopping.is_set():
                self._take_commands()
                if self.scheduler.idle:
                    self._wake.wait(0.5)
                    self._wake.clear()
                    continue
                self._iterate()
        except Exception as exc:  # a failed step ends the loop; the watchdog rebuilds it
            log.exception("generation step failed")
            self.fatal_error = exc
            self._stopping.set()  # not running from now on: new requests are refused
            dropped = self.scheduler.drop_all()
            self.fail([s.request_id for s in dropped], exc)

    def _take_commands(self) -> None:
        while True:
            try:
                kind, value = self._commands.get_nowait()
            except queue.Empty:
                return
            if kind == "add":
                assert isinstance(value, Sequence)
                self.scheduler.add(value)
            else:
                self.scheduler.cancel(str(value))

    def _iterate(self) -> None:
        self.scheduler.admit()
        out: Emitted = {}
        chunks = self.scheduler.prefill_chunks()
        if chunks:
            self._prefill(chunks, out)
        decoding = self.scheduler.decoding()
        if decoding:
            self._decode(decoding, out)
        if out:
            self.emit(out)

    def _prefill(self, chunks: list[Chunk], out: Emitted) -> None:
        width = max(c.count for c in chunks)
        scratch = self.cache.scratch
        tokens = [[0] * width for _ in chunks]
        positions = [[scratch] * width for _ in chunks]
        for row, chunk in enumerate(chunks):
            prompt = chunk.sequence.prompt
            tokens[row][: chunk.count] = prompt[chunk.start : chunk.start + chunk.count]
            positions[row][: chunk.count] = range(chunk.start, chunk.start + chunk.count)
        longest = max(c.start + c.count for c in chunks)
        device = self.decoder.tokens.device
        logits = self.step.prefill(
            torch.tensor(tokens, device=device),
            torch.tensor(positions, device=device),
            slots=torch.tensor([c.sequence.slot for c in chunks], device=device),
            last=torch.tensor([c.count - 1 for c in chunks], device=device),
            kv_len=bucket_for(longest, self.decoder.kv_buckets),
        )
        for chunk in chunks:
            chunk.sequence.prefilled += chunk.count
        done = [row for row, chunk in enumerate(chunks) if chunk.completes]
        if done:
            rows = [chunks[row].sequence for row in done]
            if len(done) < len(chunks):
                logits = logits[torch.tensor(done, device=device)]
            self._accept(rows, self._sample(logits, rows), out)

    def _decode(self, decoding: list[Sequence], out: Emitted) -> None:
        batch, kv_len = self.decoder.buckets(
            rows=max(s.slot for s in decoding) + 1,
            longest=max(s.position for s in decoding) + 1,
        )
        tokens = [0] * batch
        positions = [self.cache.scratch] * batch
        rows: list[Sequence | None] = [None] * batch
        for sequence in decoding:
            tokens[sequence.slot] = sequence.last_token
            positions[sequence.slot] = sequence.position
            rows[sequence.slot] = sequence
        logits = self.decoder.decode(tokens, positions, kv_len=kv_len)
        picked = self._sample(logits, rows)
        self._accept(decoding, [picked[s.slot] for s in decoding], out)

    def _sample(self, logits: torch.Tensor, rows: list[Sequence | None]) -> list[int]:
        """Next tokens for ``rows`` (None: padding, taken greedily and thrown away)."""
        live = [s for s in rows if s is not None]
        all_greedy = all(s.temperature == 0.0 for s in live)
        device = logits.device
        if all_greedy:
            return logits.argmax(dim=-1).tolist()
        vocab = logits.shape[-1]
        greedy = [s is None or s.temperature == 0.0 for s in rows]
        params = RowParams(
            greedy=torch.tensor(greedy, device=device),
            temperature=torch.tensor(
                [1.0 if g else s.temperature for g, s in zip(greedy, rows, strict=True)],
                device=device,
            ),
            top_k=torch.tensor(
                [vocab if s is None or s.top_k <= 0 else min(s.top_k, vocab) for s in rows],
                device=device,
            ),
            top_p=torch.tensor(
                [2.0 if s is None or s.top_p >= 1.0 else s.top_p for s in rows], device=device
            ),
            seeds=torch.tensor([0 if s is None else s.seed for s in rows], device=device),
            steps=torch.tensor([0 if s is None else s.generated for s in rows], device=device),
            all_greedy=False,
        )
        return sample(logits, params).tolist()

    def _accept(self, sequences: list[Sequence], tokens: list[int], out: Emitted) -> None:
        for sequence, token in zip(sequences, tokens, strict=True):
            sequence.generated += 1
            sequence.last_token = token
            finished = token in self.eos or sequence.generated >= sequence.max_new_tokens
            if finished:
                self.scheduler.finish(sequence)
            got, _ = out.get(sequence.request_id, ([], False))
            out[sequence.request_id] = ([*got, token], finished)
