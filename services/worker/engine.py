"""The batching engine: transformers' continuous batching, wrapped to be safe to serve.

Many jobs feed one ``ContinuousBatchingManager``; requests join at step
boundaries. The wrapper adds what a server needs and the manager lacks:
admission against cache capacity and context length (one oversized request
would kill the manager for everyone), token deltas instead of cumulative
snapshots, greedy and sampled requests in one batch, cancellation that ends
the caller's stream, and a watchdog that rebuilds a dead generation thread.

All torch work happens on the manager's own thread; the event loop only
receives outputs (``call_soon_threadsafe``), so heartbeats, aborts and
health keep working while the model computes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from services.worker.loading import LoadedModel
from services.worker.metrics import WorkerMetrics
from services.worker.settings import WorkerSettings

if TYPE_CHECKING:
    from services.worker.backends import ServingEngine

log = logging.getLogger("tinyllama.worker.engine")


class EngineError(Exception):
    """A request failed inside the engine; ``code`` is stable for clients."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class RequestTooLarge(EngineError):
    """Prompt plus ``max_new_tokens`` does not fit the cache or the model's context."""

    def __init__(self, message: str) -> None:
        super().__init__("request_too_large", message)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sampling:
    """Per-request sampling; ``temperature == 0`` means greedy.

    ``seed`` makes a sampled request reproducible on the static engine; the
    transformers backend samples with one generator per batch and ignores it.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    def processor_kwargs(self, *, vocab_size: int) -> dict[str, Any]:
        """The manager's per-request processor arguments (floats must be floats)."""
        if self.temperature == 0.0:
            # Sampling from a top-1 distribution is argmax: greedy rows share the sampled batch.
            return {"temperature": 1.0, "top_k": 1, "top_p": 1.0}
        top_k = self.top_k if self.top_k > 0 else vocab_size
        return {
            "temperature": float(self.temperature),
            "top_k": int(top_k),
            "top_p": float(self.top_p),
        }


CANCELLED = object()  # put on a flight's queue to end its stream
WARMUP_ID = "warmup"  # the engine's own first request: not counted as active


def refuse_oversized(
    *, prompt_tokens: int, max_new_tokens: int, max_context: int, cache_tokens: int, cache: str
) -> None:
    """``RequestTooLarge`` for what the context or the cache (named by ``cache``) cannot hold."""
    need = prompt_tokens + max_new_tokens
    asked = f"prompt ({prompt_tokens} tokens) + max_new_tokens ({max_new_tokens}) = {need}"
    if need > max_context:
        raise RequestTooLarge(f"{asked} exceeds the model's context of {max_context} tokens")
    if need > cache_tokens:
        raise RequestTooLarge(f"{asked} exceeds {cache}")


@dataclasses.dataclass
class Flight:
    """One request's stream: what the engine hands it, in order, on one queue."""

    queue: asyncio.Queue[Any] = dataclasses.field(default_factory=asyncio.Queue)
    sent: int = 0
    done: bool = False
    cancelled: bool = False


class Flights:
    """The requests an engine is streaming, by id (both engines keep theirs here)."""

    def __init__(self) -> None:
        self._by_id: dict[str, Flight] = {}

    @property
    def active(self) -> int:
        """Requests in flight, the warm-up excepted."""
        return len([k for k in self._by_id if k != WARMUP_ID])

    def check_new(self, request_id: str) -> None:
        """``EngineError`` if ``request_id`` is already streaming."""
        if request_id in self._by_id:
            raise EngineError("duplicate_request", f"request {request_id} is already running")

    @contextlib.contextmanager
    def opened(self, request_id: str, *, abandon: Callable[[str], None]) -> Iterator[Flight]:
        """``request_id``'s flight for the block; leaving before its end calls ``abandon``.

        The caller stopped early (stop sequence, abort, error): ``abandon`` frees its
        cache at once.
        """
        flight = Flight()
        self._by_id[request_id] = flight
        try:
            yield flight
        finally:
            if not flight.done and not flight.cancelled:
                abandon(request_id)
            self._by_id.pop(request_id, None)

    def put(self, request_id: str, item: Any) -> None:
        """Hand ``item`` to ``request_id``'s stream, if it is still there."""
        flight = self._by_id.get(request_id)
        if flight is not None:
            flight.queue.put_nowait(item)

    def fail_all(self, error: EngineError) -> None:
        """Every stream in flight raises ``error``."""
        for flight in self._by_id.values():
            flight.queue.put_nowait(error)

    def cancel(self, request_id: str) -> bool:
        """End ``request_id``'s stream; True when it was streaming and not yet cancelled."""
        flight = self._by_id.get(request_id)
        if flight is None or flight.cancelled:
            return False
        flight.cancelled = True
        flight.queue.put_nowait(CANCELLED)
        return True


class Engine:
    """One model, one manager, many concurrent streams."""

    def __init__(
        self, *, loaded: LoadedModel, settings: WorkerSettings, metrics: WorkerMetrics | None = None
    ) -> None:
        self.loaded = loaded
        self.settings = settings
        self.metrics = metrics
        config = loaded.model.config
        self.vocab_size = int(config.vocab_size)
        self.max_context = int(getattr(config, "max_position_embeddings", 2048) or 2048)
        self.page_size = settings.block_size
        self.num_blocks = max(2, settings.cache_tokens // settings.block_size)
        self.cache_tokens = self.num_blocks * self.page_size
        self.capacity = settings.max_batch
        self._manager: Any = None
        self._flights = Flights()
        self._tokens_done = 0
        self._rebuilds = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle
    def _build_manager(self) -> Any:
        from transformers import ContinuousBatchingConfig, GenerationConfig

        tokenizer = self.loaded.tokenizer
        eos = tokenizer.eos_token_id
        generation_config = GenerationConfig(
            do_sample=True,
            # Non-default values make the manager build per-request processors for all three.
            temperature=0.7,
            top_k=50,
            top_p=0.95,
            max_new_tokens=self.settings.max_new_tokens,
            eos_token_id=eos if eos is not None else -1,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
        )
        graphs = self.settings.cuda_graphs
        use_graphs = graphs == "on" or (graphs == "auto" and self.loaded.device.startswith("cuda"))
        # transformers < 5.17 calls the KV page size block_size; later versions page_size.
        fields = {f.name for f in dataclasses.fields(ContinuousBatchingConfig)}
        page = {"page_size" if "page_size" in fields else "block_size": self.page_size}
        cb_config = ContinuousBatchingConfig(
            # CUDA graphs remove the per-step launch overhead that dominates small-batch decode
            # (measured 16x at batch 1 on an H100, bench/README.md).
            use_cuda_graph=use_graphs,
            **page,
            num_blocks=self.num_blocks,
            max_batch_tokens=self.settings.max_batch_tokens,
            max_requests_per_batch=self.capacity,
            per_request_processors=True,
            allow_block_sharing=False,
        )
        manager = self.loaded.model.init_continuous_batching(
            generation_config=generation_config, continuous_batching_config=cb_config
        )
        manager.start()
        return manager

    async def start(self) -> None:
        """Start the generation thread (and, if configured, run one warm-up generation)."""
        self._loop = asyncio.get_running_loop()
        self._manager = await asyncio.to_thread(self._build_manager)
        if self.settings.warmup:
            ids = self.loaded.tokenizer("Hello", add_special_tokens=True)["input_ids"]
            async for _ in self.stream(WARMUP_ID, ids, max_new_tokens=4, sampling=Sampling()):
                pass

    def is_alive(self) -> bool:
        """True while the generation thread runs."""
        return self._manager is not None and self._manager.is_running()

    async def stop(self) -> None:
        """Stop the generation thread; without this the process hangs at exit."""
        manager, self._manager = self._manager, None
        if manager is not None:
            await asyncio.to_thread(manager.stop, block=True, timeout=30)
        self._fail_all(EngineError("shutdown", "the worker is shutting down"))

    async def rebuild(self, reason: str) -> None:
        """Replace a dead manager; every request in flight fails and may be retried."""
        self._rebuilds += 1
        log.error("generation thread died (%s): rebuilding the engine", reason)
        self._fail_all(EngineError("engine_restarted", f"the engine restarted: {reason}"))
        old, self._manager = self._manager, None
        if old is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(old.stop, block=True, timeout=10, hard_stop=True)
        self._manager = await asyncio.to_thread(self._build_manager)

    async def watch(self, *, interval_s: float = 0.5) -> None:
        """Forever: notice a dead generation thread and rebuild it."""
        while True:
            await asyncio.sleep(interval_s)
            if self._manager is not None and not self._manager.is_running():
                error = getattr(self._manager.background_thread_status, "fatal_error", None)
                await self.rebuild(repr(error) if error else "thread exited")

    def _fail_all(self, error: EngineError) -> None:
        self._flights.fail_all(error)

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
        """Refuse, before admission, what the cache or the model's context cannot hold."""
        refuse_oversized(
            prompt_tokens=prompt_tokens,
            max_new_tokens=max_new_tokens,
            max_context=self.max_context,
            cache_tokens=self.cache_tokens,
            cache=f"the KV cache of {self.cache_tokens} tokens",
        )

    def _deliver(self, output: Any) -> None:
        self._flights.put(output.request_id, output)

    async def stream(
        self, request_id: str, input_ids: list[int], *, max_new_tokens: int, sampling: Sampling
    ) -> AsyncIterator[list[int]]:
        """Yield lists of new token ids as they are generated, until the request ends.

        Raises ``EngineError`` if it fails; a cancelled request simply stops.
        """
        self.check_fits(prompt_tokens=len(input_ids), max_new_tokens=max_new_tokens)
        manager = self._manager
        if manager is None or not manager.is_running():
            raise EngineError("engine_unavailable", "the engine is not running")
        self._flights.check_new(request_id)
        with self._flights.opened(request_id, abandon=self.cancel) as flight:
            manager.register_result_handler(request_id, self._deliver)
            manager.add_request(
                input_ids=list(input_ids),
                request_id=request_id,
                max_new_tokens=max_new_tokens,
                streaming=True,
                **sampling.processor_kwargs(vocab_size=self.vocab_size),
            )
            while True:
                item = await flight.queue.get()
                if item is CANCELLED:
                    return
                if isinstance(item, EngineError):
                    raise item
                if item.error:
                    raise EngineError("generation_failed", str(item.error))
                tokens = item.generated_tokens
                if len(tokens) > flight.sent:
                    new = list(tokens[flight.sent :])
                    flight.sent = len(tokens)
                    self._tokens_done += len(new)
                    yield new
                if item.is_finished():
                    flight.done = True
                    return

    def cancel(self, request_id: str) -> None:
        """Stop generating for ``request_id`` and free its cache; its stream ends."""
        manager = self._manager
        if self._flights.cancel(request_id) and manager is not None:
            manager.cancel_request(request_id)
            # A cancelled request gets no final output: drop its handler ourselves.
            with manager.output_router._lock:
                manager.output_router.result_handlers.pop(request_id, None)


def measure_rate(
    engine: ServingEngine, *, since: tuple[float, int]
) -> tuple[float, tuple[float, int]]:
    """Tokens per second since the last sample, and the new sample."""
    now = time.monotonic()
    then, tokens = since
    rate = (engine.tokens_done - tokens) / max(now - then, 1e-6)
    return rate, (now, engine.tokens_done)
