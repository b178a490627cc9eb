"""Which engine serves the model: our static-cache Llama engine, or transformers' batching.

``TINYLLAMA_ENGINE=auto`` picks ``static`` for Llama architectures (TinyLlama,
SmolLM2, Llama 2/3) and ``transformers`` for everything else, as TGI and vLLM
keep their own modeling code for the architectures they serve fast. Both
engines have the interface in ``ServingEngine``; the worker uses only that.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

from services.worker.engine import Engine, Sampling
from services.worker.loading import LoadedModel
from services.worker.metrics import WorkerMetrics
from services.worker.settings import WorkerSettings

log = logging.getLogger("tinyllama.worker.backends")


class ServingEngine(Protocol):
    """What the worker (runner, heartbeat, main) uses of an engine."""

    loaded: LoadedModel
    settings: WorkerSettings
    metrics: WorkerMetrics | None
    capacity: int
    max_context: int
    cache_tokens: int
    vocab_size: int

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def rebuild(self, reason: str) -> None: ...
    async def watch(self, *, interval_s: float = 0.5) -> None: ...
    def is_alive(self) -> bool: ...
    @property
    def active(self) -> int: ...
    @property
    def tokens_done(self) -> int: ...
    def check_fits(self, *, prompt_tokens: int, max_new_tokens: int) -> None: ...
    def stream(
        self, request_id: str, input_ids: list[int], *, max_new_tokens: int, sampling: Sampling
    ) -> AsyncIterator[list[int]]: ...
    def cancel(self, request_id: str) -> None: ...


def choose_backend(*, model: Any, setting: str) -> str:
    """``static`` or ``transformers`` for ``model`` under ``TINYLLAMA_ENGINE=setting``.

    ``static`` asked for a model it cannot serve is an error, not a quiet fallback.
    """
    from services.worker.static.weights import UnsupportedModel, unsupported_reason

    if setting == "transformers":
        return "transformers"
    reason = unsupported_reason(model)
    if reason is None:
        return "static"
    if setting == "static":
        raise UnsupportedModel(
            f"TINYLLAMA_ENGINE=static cannot serve this model: {reason} "
            "(TINYLLAMA_ENGINE=auto or transformers serves it with transformers' batching)"
        )
    log.info("serving with transformers' batching: %s", reason)
    return "transformers"


def build_engine(
    *, loaded: LoadedModel, settings: WorkerSettings, metrics: WorkerMetrics | None = None
) -> ServingEngine:
    """The engine ``settings.engine`` asks for (``auto``: static for Llama)."""
    from services.worker.static.engine import StaticEngine

    backend = choose_backend(model=loaded.model, setting=settings.engine)
    if backend == "static":
        return StaticEngine(loaded=loaded, settings=settings, metrics=metrics)
    return Engine(loaded=loaded, settings=settings, metrics=metrics)
