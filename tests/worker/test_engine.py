"""Both batching engines: exact greedy outputs, admission, cancellation, concurrency.

Every test runs on ``transformers`` and ``static`` (the ``backend`` fixture).
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import torch

from services.worker.backends import ServingEngine
from services.worker.engine import Engine, RequestTooLarge, Sampling

PROMPTS = ["Hello world", "The llama is a tiny model", "queue worker gateway gpu", "Why?"]
LONG = 400  # new tokens: a request that is still running when the test acts on it


async def _collect(
    engine: ServingEngine, rid: str, ids: list[int], n: int, **sampling
) -> list[int]:
    out: list[int] = []
    async for new in engine.stream(rid, ids, max_new_tokens=n, sampling=Sampling(**sampling)):
        out.extend(new)
    return out


def _reference(loaded, ids: list[int], n: int) -> list[int]:
    with torch.no_grad():
        result = loaded.model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False)
    return result[0, len(ids) :].tolist()


async def _kill_generation_thread(engine: ServingEngine, *, hard: bool = False) -> None:
    """Stop the engine's generation thread behind its back, as a crash would."""
    if isinstance(engine, Engine):
        await asyncio.to_thread(engine._manager.stop, block=True, timeout=10, hard_stop=hard)
    else:
        await asyncio.to_thread(engine._loop_thread.stop, timeout=10)


async def test_greedy_matches_sequential_generate(engine, loaded_model):
    """Concurrent greedy requests through the engine equal model.generate token for token."""
    tok = loaded_model.tokenizer
    prompts = [tok(p)["input_ids"] for p in PROMPTS]
    outputs = await asyncio.gather(
        *[_collect(engine, f"g{i}", ids, 24) for i, ids in enumerate(prompts)]
    )
    for ids, got in zip(prompts, outputs, strict=True):
        expected = _reference(loaded_model, ids, 24)
        assert got == expected[: len(got)]
        assert len(got) == len(expected)


async def test_greedy_and_sampled_requests_share_a_batch(engine, loaded_model):
    """A sampled request running beside a greedy one does not change the greedy output."""
    ids = loaded_model.tokenizer("Hello world")["input_ids"]
    greedy, _ = await asyncio.gather(
        _collect(engine, "greedy", ids, 20),
        _collect(engine, "hot", ids, 20, temperature=1.5, top_k=50, top_p=0.9),
    )
    assert greedy == _reference(loaded_model, ids, 20)[: len(greedy)]


async def test_oversized_request_is_refused_and_engine_survives(
    loaded_model, small_engine_settings, make_engine
):
    """A request larger than the cache fails alone; the next request still runs."""
    engine = make_engine(small_engine_settings)
    await engine.start()
    try:
        with pytest.raises(RequestTooLarge, match="KV cache"):
            await _collect(engine, "big", [5] * 200, 100)
        ids = loaded_model.tokenizer("Hello")["input_ids"]
        assert len(await _collect(engine, "after", ids, 8)) >= 1
        assert engine.is_alive()
    finally:
        await engine.stop()


async def test_context_length_is_checked(engine):
    """prompt + max_new_tokens beyond max_position_embeddings is refused before admission."""
    with pytest.raises(RequestTooLarge, match="context"):
        engine.check_fits(prompt_tokens=2000, max_new_tokens=100)


async def test_cancel_stops_the_stream(engine, loaded_model):
    """Cancelling a running request ends its stream early and frees its slot."""
    ids = loaded_model.tokenizer("Hello")["input_ids"]
    got: list[int] = []

    async def consume() -> None:
        async for new in engine.stream(
            "victim", ids, max_new_tokens=LONG, sampling=Sampling(temperature=1.0)
        ):
            got.extend(new)
            if len(got) >= 3:
                engine.cancel("victim")

    await asyncio.wait_for(consume(), timeout=30)
    assert 3 <= len(got) < LONG
    assert engine.active == 0


async def test_abandoned_stream_frees_its_slot(engine, loaded_model):
    """A consumer cancelled mid-stream (aclosing) leaves no request in flight."""
    ids = loaded_model.tokenizer("Hello")["input_ids"]
    first_token = asyncio.Event()

    async def consume() -> None:
        tokens = engine.stream("abandoned", ids, max_new_tokens=LONG, sampling=Sampling())
        async with contextlib.aclosing(tokens):
            async for _ in tokens:
                first_token.set()
                await asyncio.sleep(0.01)

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_token.wait(), timeout=30)
    assert engine.active == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert engine.active == 0


async def test_dead_generation_thread_is_rebuilt(engine, loaded_model):
    """If the generation thread dies, the watchdog rebuilds it and new requests run."""
    watchdog = asyncio.create_task(engine.watch(interval_s=0.05))
    try:
        await _kill_generation_thread(engine)
        for _ in range(100):
            if engine.is_alive():
                break
            await asyncio.sleep(0.05)
        assert engine.is_alive()
        ids = loaded_model.tokenizer("Hello")["input_ids"]
        assert await _collect(engine, "after-rebuild", ids, 5)
    finally:
        watchdog.cancel()


async def test_requests_in_flight_fail_cleanly_when_the_engine_dies(engine, loaded_model):
    """A request running when the generation thread dies ends with an error, not a hang."""
    from services.worker.engine import EngineError

    watchdog = asyncio.create_task(engine.watch(interval_s=0.05))
    ids = loaded_model.tokenizer("Hello")["input_ids"]
    started = asyncio.Event()

    async def consume() -> None:
        tokens = engine.stream("doomed", ids, max_new_tokens=LONG, sampling=Sampling())
        async with contextlib.aclosing(tokens):
            async for _ in tokens:
                started.set()
                await asyncio.sleep(0.01)

    task = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(started.wait(), timeout=30)
        await _kill_generation_thread(engine, hard=True)
        with pytest.raises(EngineError) as failure:
            await asyncio.wait_for(task, timeout=30)
        # The dying manager fails what it holds; requests it did not reach fail as restarted.
        assert failure.value.code in ("generation_failed", "engine_restarted")
        assert engine.active == 0
        for _ in range(100):
            if engine.is_alive():
                break
            await asyncio.sleep(0.05)
        assert await _collect(engine, "after-death", ids, 4)
    finally:
        watchdog.cancel()
