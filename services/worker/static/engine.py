"""``StaticEngine``: the static-cache Llama engine, with the worker's engine interface.

Same contract as ``services.worker.engine.Engine`` (start, stop, rebuild,
watch, stream, cancel, check_fits, active, tokens_done): the worker does not
know which one it has. The differences are inside: our own forward pass over
a static KV cache (``MAX_BATCH`` slots of ``CACHE_TOKENS / MAX_BATCH`` tokens
each, capped at the model's context), CUDA graphs for decode, per-row
sampling with per-request seeds.

All torch work happens on the ``GenerationLoop`` thread; its outputs reach
the event loop through ``call_soon_threadsafe``, one batch per step.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from services.worker.engine import (
    CANCELLED,
    WARMUP_ID,
    EngineError,
    Flights,
    Sampling,
    refuse_oversized,
)
from services.worker.loading import LoadedModel
from services.worker.metrics import WorkerMetrics
from services.worker.settings import WorkerSettings
from services.worker.static.weights import UnsupportedModel, unsupported_reason

log = logging.getLogger("tinyllama.worker.static")


def eos_ids(loaded: LoadedModel) -> frozenset[int]:
    """The tokenizer's EOS and the generation config's (Llama 3 lists several)."""
    ids: set[int] = set()
    eos = getattr(loaded.tokenizer, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    config = getattr(loaded.model, "generation_config", None)
    configured = getattr(config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif isinstance(configured, list | tuple):
        ids.update(int(i) for i in configured)
    return frozenset(ids)


class StaticEngine:
    """One model, ``capacity`` cache slots, many concurrent streams."""

    def __init__(
        self, *, loaded: LoadedModel, settings: WorkerSettings, metrics: WorkerMetrics | None = None
    ) -> None:
        reason = unsupported_reason(loaded.model)
        if reason is not None:
            raise UnsupportedModel(f"the static engine cannot serve this model: {reason}")
        self.loaded = loaded
        self.settings = settings
        self.metrics = metrics
        config = loaded.model.config
        self.vocab_size = int(config.vocab_size)
        self.capacity = settings.max_batch
        self.max_context = int(getattr(config, "max_position_embeddings", 2048) or 2048)
        # A slot holds one whole request: what one request may use is a slot's length.
        self.cache_tokens = max(1, min(self.max_context, settings.cache_tokens // self.capacity))
        self.eos = eos_ids(loaded)
        self._decoder: Any = None
        self._loop_thread: Any = None
        self._flights = Flights()
        self._tokens_done = 0
        self._rebuilds = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle
    def _build_decoder(self) -> Any:
        """Weights, cache and step (and the CUDA graphs): once per engine."""
        import torch

        from services.worker.static.cache import KVCache
        from services.worker.static.graphs import Decoder
        from services.worker.static.step import Step
        from services.worker.static.weights import extract_weights

        torch.set_grad_enabled(False)
        weights = extract_weights(self.loaded.model)
        cache = KVCache(
            layers=len(weights.layers),
            slots=self.capacity,
            kv_heads=weights.kv_heads,
            slot_len=self.cache_tokens,
            head_dim=weights.head_dim,
            dtype=weights.dtype,
            device=weights.device,
        )
        graphs = self.settings.cuda_graphs
        use_graphs = graphs == "on" or (graphs == "auto" and weights.device.type == "cuda")
        decoder = Decoder(Step(weights=weights, cache=cache), use_graphs=use_graphs)
        decoder.capture()
        log.info(
            "static engine ready",
            extra={
                "slots": self.capacity,
                "slot_tokens": self.cache_tokens,
                "cache_mb": cache.nbytes // 2**20,
                "cuda_graphs": len(decoder.graphs),
            },
        )
        return decoder

    def _start_loop(self) -> None:
        from services.worker.static.loop import GenerationLoop

        loop = GenerationLoop(
            decoder=self._decoder,
            max_batch_tokens=self.settings.max_batch_tokens,
            eos=self.eos,
            emit=self._emit,
            fail=self._fail_from_thread,
        )
        loop.start()
        self._loop_thread = loop

    async def start(self) -> None:
        """Build the step (capturing CUDA graphs), start the thread, run one warm-up request."""
        self._loop = asyncio.get_running_loop()
        self._decoder = await asyncio.to_thread(self._build_decoder)
        self._start_loop()
        if self.settings.warmup:
            ids = self.loaded.tokenizer("Hello", add_special_tokens=True)["input_ids"]
            async for _ in self.stream(WARMUP_ID, ids, max_new_tokens=4, sampling=Sampling()):
                pass

    def is_alive(self) -> bool:
        """True while the generation thread runs."""
        return self._loop_thread is not None and self._loop_thread.is_running()

    async def stop(self) -> None:
        """Stop the generation thread; requests in flight fail as ``shutdown``."""
        thread, self._loop_thread = self._loop_thread, None
        if thread is not None:
            await asyncio.to_thread(thread.stop, timeout=30)
        self._fail_all(EngineError("shutdown", "the worker is shutting down"))

    async def rebuild(self, reason: str) -> None:
        """Replace a dead generation thread; every request in flight fails and may be retried."""
        self._rebuilds += 1
        log.error("generation thread died (%s): rebuilding the engine", reason)
        self._fail_all(EngineError("engine_restarted", f"the engine restarted: {reason}"))
        old, self._loop_thread = self._loop_thread, None
        if old is not None:
            await asyncio.to_thread(old.stop, timeout=10)
        if self._decoder is None:
            self._decoder = await asyncio.to_thread(self._build_decoder)
        self._start_loop()

    async def watch(self, *, interval_s: float = 0.5) -> None:
        """Forever: notice a dead generation thread and rebuild it."""
        while True:
            await asyncio.sleep(interval_s)
            thread = self._loop_thread
            if thread is not None and not thread.is_running():
                error = thread.fatal_error
                await self.rebuild(repr(error) if error else "thread exited")

    def _fail_all(self, error: EngineError) -> None:
        self._flights.fail_all(error)

    # ------------------------------------------------------------------ thread -> event loop
    def _emit(self, batch: dict[str, tuple[list[int], bool]]) -> None:
        """Called on the generation thread once per step."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._deliver, batch)

    def _fail_from_thread(self, request_ids: list[str], error: BaseException) -> None:
        """Called on the generation thread as it ends after a failed step.

        ``_emit`` raises once the event loop is closed (the thread then ends, as after
        any failed step); with no loop left there is nobody to tell, and the thread
        must not die of it in its own error handler.
        """
        failure = EngineError("generation_failed", f"generation failed: {error!r}")
        if self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._deliver_failure, request_ids, failure)
            except RuntimeError:
                if not self._loop.is_closed():
                    raise

    def _deliver(self, batch: dict[str, tuple[list[int], bool]]) -> None:
        for request_id, item in batch.items():
            self._flights.put(request_id, item)

    def _deliver_failure(self, request_ids: list[str], error: EngineError) -> None:
        for request_id in request_ids:
            self._flights.put(request_id, error)

    # ------------------------------------------------------------------ stats
    @property
    def active(self) -> int:
        """Requests in flight."""
        return self._flights.active

    @property
    def tokens_done(self) -> int:
        """Tokens generated since start (for tokens/s in heartbeats)."""
        return self._tokens_done

    # ------------------------------------------------------------------ requests
    def check_fits(self, *, prompt_tokens: int, max_new_tokens: int) -> None:
        """Refuse, before admission, what the model's context or one cache slot cannot hold."""
        refuse_oversized(
            prompt_tokens=prompt_tokens,
            max_new_tokens=max_new_tokens,
            max_context=self.max_context,
            cache_tokens=self.cache_tokens,
            cache=f"a KV cache slot of {self.cache_tokens} tokens "
            "(TINYLLAMA_CACHE_TOKENS / TINYLLAMA_MAX_BATCH)",
        )

    async def stream(
        self, request_id: str, input_ids: list[int], *, max_new_tokens: int, sampling: Sampling
    ) -> AsyncIterator[list[int]]:
        """Yield lists of new token ids as they are generated, until the request ends.

        Raises ``EngineError`` if it fails; a cancelled request simply stops.
        """
        from services.worker.static.sampling import random_seed
        from services.worker.static.scheduler import Sequence

        self.check_fits(prompt_tokens=len(input_ids), max_new_tokens=max_new_tokens)
        thread = self._loop_thread
        if thread is None or not thread.is_running():
            raise EngineError("engine_unavailable", "the engine is not running")
        self._flights.check_new(request_id)
        if not input_ids:
            raise EngineError("empty_prompt", "the prompt has no tokens")
        if min(input_ids) < 0 or max(input_ids) >= self.vocab_size:
            # An id past the embedding would fail the step for every request in the batch
            # (and, on CUDA, can leave the device unusable): refuse this one request.
            raise EngineError(
                "invalid_prompt", f"the prompt has token ids outside 0..{self.vocab_size - 1}"
            )
        with self._flights.opened(request_id, abandon=self.cancel) as flight:
            thread.submit(
                Sequence(
                    request_id=request_id,
                    prompt=list(input_ids),
                    max_new_tokens=max_new_tokens,
                    temperature=float(sampling.temperature),
                    top_k=int(sampling.top_k),
                    top_p=float(sampling.top_p),
                    seed=sampling.seed if sampling.seed is not None else random_seed(),
                )
            )
            while True:
                items = [await flight.queue.get()]
                # Steps the caller fell behind on leave as one delta: the event loop then
                # pays its per-delta work (decode, publish) once, not once per step.
                while not flight.queue.empty():
                    items.append(flight.queue.get_nowait())
                tokens: list[int] = []
                finished, error = False, None
                for item in items:  # in order: nothing after the request's end counts
                    if item is CANCELLED:
                        return
                    if isinstance(item, EngineError):
                        error = item
                        break
                    tokens.extend(item[0])
                    if item[1]:
                        finished = True
                        break
                if tokens:  # what came before a failure is the caller's, as on transformers
                    self._tokens_done += len(tokens)
                    yield tokens
                if error is not None:
                    raise error
                if finished:
                    flight.done = True
                    return

    def cancel(self, request_id: str) -> None:
        """Stop generating for ``request_id`` and free its slot; its stream ends."""
        thread = self._loop_thread
        if self._flights.cancel(request_id) and thread is not None:
            thread.cancel(request_id)
