"""The static engine end to end on the CPU (float32): exact greedy, seeds, slots.

Greedy outputs are compared with ``model.generate`` token for token, on the
demo model and on SmolLM2-135M-Instruct, alone and with requests joining a
running batch at different steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading

import pytest
import torch

from services.worker.engine import EngineError, Sampling
from services.worker.static.engine import StaticEngine

PROMPTS = [
    "Hello world",
    "The llama is a tiny model and it answers questions about the cloud",
    "queue worker gateway gpu",
    "Why?",
    "A stream of tokens, one request after another, all night long, until the budget says stop",
    "Cache key value",
    "Time to first token is what the user sees first, then the rest of the answer",
    "Run",
]
SEEDED = Sampling(temperature=1.0, top_k=50, top_p=0.9, seed=1234)


def _reference(model, ids: list[int], n: int, **kwargs) -> list[int]:
    out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, **kwargs)
    return out[0, len(ids) :].tolist()


async def _collect(engine, rid: str, ids: list[int], n: int, sampling=Sampling()) -> list[int]:
    out: list[int] = []
    async for new in engine.stream(rid, ids, max_new_tokens=n, sampling=sampling):
        out.extend(new)
    return out


@pytest.fixture
async def static_engine(loaded_model, engine_settings):
    """A started static engine on the demo model (8 slots of 512 tokens)."""
    engine = StaticEngine(loaded=loaded_model, settings=engine_settings)
    await engine.start()
    yield engine
    await engine.stop()


async def _staggered(engine, prompts: list[list[int]], n: int) -> list[list[int]]:
    """Request i starts once request i-1 has its second token: each joins a running batch."""
    outputs: list[list[int]] = [[] for _ in prompts]
    going = [asyncio.Event() for _ in prompts]

    async def one(i: int) -> None:
        if i:
            await going[i - 1].wait()
        async for new in engine.stream(f"s{i}", prompts[i], max_new_tokens=n, sampling=Sampling()):
            outputs[i].extend(new)
            if len(outputs[i]) >= 2:
                going[i].set()
        going[i].set()

    await asyncio.gather(*(one(i) for i in range(len(prompts))))
    return outputs


@pytest.mark.parametrize("prefill_tokens", [256, 5], ids=["whole-prompts", "5-token-chunks"])
async def test_greedy_equals_generate_alone_and_with_eight_joining_mid_flight(
    loaded_model, engine_settings, prefill_tokens
):
    """Batch 1, then 8 requests of different lengths joining at different steps: all exact."""
    tok, model = loaded_model.tokenizer, loaded_model.model
    prompts = [tok(p)["input_ids"] for p in PROMPTS]
    expected = [_reference(model, ids, 20) for ids in prompts]
    settings = dataclasses.replace(engine_settings, max_batch_tokens=prefill_tokens)
    engine = StaticEngine(loaded=loaded_model, settings=settings)
    await engine.start()
    try:
        assert await _collect(engine, "alone", prompts[1], 20) == expected[1]
        assert await _staggered(engine, prompts, 20) == expected
    finally:
        await engine.stop()


async def test_smollm2_greedy_equals_generate(smollm2_model_path, engine_settings):
    """The real model (SmolLM2-135M-Instruct): exact alone and with two requests together."""
    from services.worker.loading import load_model

    settings = dataclasses.replace(engine_settings, model=str(smollm2_model_path), max_batch=2)
    loaded = load_model(settings)
    engine = StaticEngine(loaded=loaded, settings=settings)
    await engine.start()
    try:
        tok = loaded.tokenizer
        chat = [{"role": "user", "content": "What is the capital of France? Answer briefly."}]
        question = list(tok.apply_chat_template(chat, add_generation_prompt=True)["input_ids"])
        other = tok("The llama is an animal that")["input_ids"]
        expected = [_reference(loaded.model, ids, 8) for ids in (question, other)]
        assert await _collect(engine, "alone", question, 8) == expected[0]
        assert await _staggered(engine, [question, other], 8) == expected
    finally:
        await engine.stop()


async def test_a_seeded_request_gives_the_same_tokens_alone_and_in_a_busy_batch(
    static_engine, loaded_model
):
    """Noise depends on (seed, step) only: neighbours and slot do not change a seeded sample."""
    tok = loaded_model.tokenizer
    ids = tok("Hello world")["input_ids"]
    alone = await _collect(static_engine, "alone", ids, 16, SEEDED)
    others = [tok(p)["input_ids"] for p in PROMPTS[:5]]
    busy = await asyncio.gather(
        *(
            _collect(static_engine, f"n{i}", p, 16, Sampling(temperature=1.3))
            for i, p in enumerate(others)
        ),
        _collect(static_engine, "busy", ids, 16, SEEDED),
    )
    assert busy[-1] == alone
    other_seed = dataclasses.replace(SEEDED, seed=99)
    assert await _collect(static_engine, "other", ids, 16, other_seed) != alone


async def test_max_new_tokens_and_eos_end_each_slot_on_its_own(loaded_model, engine_settings):
    """One request stops at EOS, its neighbour runs to max_new_tokens, both exact."""
    tok, model = loaded_model.tokenizer, loaded_model.model
    ids_a, ids_b = tok(PROMPTS[0])["input_ids"], tok(PROMPTS[2])["input_ids"]
    # References that run past the model's own EOS: here another token plays EOS.
    expected_a, expected_b = (_reference(model, i, 12, eos_token_id=-1) for i in (ids_a, ids_b))
    eos = expected_a[3]  # request A must end right after this token
    assert eos not in expected_b
    engine = StaticEngine(loaded=loaded_model, settings=engine_settings)
    engine.eos = frozenset({eos})
    await engine.start()
    try:
        got_a, got_b = await asyncio.gather(
            _collect(engine, "a", ids_a, 12), _collect(engine, "b", ids_b, 7)
        )
    finally:
        await engine.stop()
    assert got_a == expected_a[: expected_a.index(eos) + 1]
    assert got_b == expected_b[:7]


async def test_cancel_frees_the_slot_for_waiting_requests(loaded_model, engine_settings):
    """With one slot, a cancelled request makes room: the queued one then runs, exact."""
    settings = dataclasses.replace(engine_settings, max_batch=1)
    engine = StaticEngine(loaded=loaded_model, settings=settings)
    await engine.start()
    tok = loaded_model.tokenizer
    ids = tok(PROMPTS[3])["input_ids"]
    try:
        got: list[int] = []

        async def victim() -> None:
            async for new in engine.stream("victim", ids, max_new_tokens=400, sampling=SEEDED):
                got.extend(new)
                if len(got) >= 3:
                    engine.cancel("victim")

        waiting = asyncio.create_task(_collect(engine, "next", ids, 10))
        await asyncio.wait_for(victim(), timeout=30)
        assert 3 <= len(got) < 400
        assert await asyncio.wait_for(waiting, 30) == _reference(loaded_model.model, ids, 10)
        assert engine.active == 0
    finally:
        await engine.stop()


async def test_a_token_id_past_the_vocabulary_fails_only_its_own_request(static_engine):
    """An out-of-range prompt id is refused up front; a request beside it is unharmed."""
    ids = static_engine.loaded.tokenizer(PROMPTS[0])["input_ids"]
    beside = asyncio.create_task(_collect(static_engine, "beside", ids, 6))
    with pytest.raises(EngineError) as refused:
        await _collect(static_engine, "bad", [*ids, static_engine.vocab_size], 4)
    assert refused.value.code == "invalid_prompt"
    assert await asyncio.wait_for(beside, 30) == _reference(static_engine.loaded.model, ids, 6)


async def test_a_reused_slot_gives_what_a_fresh_engine_gives(loaded_model, engine_settings):
    """A long request then a short one in the same slot: the short one equals a fresh run."""
    settings = dataclasses.replace(engine_settings, max_batch=1)
    tok = loaded_model.tokenizer
    long_ids = tok(PROMPTS[4] * 3)["input_ids"]
    short_ids = tok(PROMPTS[3])["input_ids"]

    async def run(requests: list[tuple[list[int], int]]) -> list[list[int]]:
        engine = StaticEngine(loaded=loaded_model, settings=settings)
        await engine.start()
        try:
            return [await _collect(engine, f"r{i}", ids, n) for i, (ids, n) in enumerate(requests)]
        finally:
            await engine.stop()

    reused = await run([(long_ids, 40), (short_ids, 12)])
    fresh = await run([(short_ids, 12)])
    assert reused[1] == fresh[0]
    assert len(long_ids) + 40 > 64  # the first request filled more than the first bucket


async def test_a_failed_step_fails_its_requests_and_the_watchdog_rebuilds(
    static_engine, loaded_model
):
    """An exception inside a step fails the requests in flight; new ones run after rebuild."""
    watchdog = asyncio.create_task(static_engine.watch(interval_s=0.05))
    ids = loaded_model.tokenizer("Hello")["input_ids"]
    decoder = static_engine._decoder
    real = decoder.decode

    def broken(*args, **kwargs):
        decoder.decode = real
        raise RuntimeError("device fell off the bus")

    decoder.decode = broken
    try:
        with pytest.raises(Exception, match="device fell off") as failure:
            await asyncio.wait_for(_collect(static_engine, "doomed", ids, 8), 30)
        assert failure.value.code in ("generation_failed", "engine_restarted")
        for _ in range(100):
            if static_engine.is_alive():
                break
            await asyncio.sleep(0.05)
        assert await _collect(static_engine, "after", ids, 4)
    finally:
        watchdog.cancel()


def test_auto_serves_llama_with_the_static_engine_and_reports_a_slot_as_context(
    loaded_model, engine_settings
):
    """The demo Llama gets StaticEngine; heartbeats say one slot (4096 / 8) is the context."""
    from services.worker.backends import build_engine
    from services.worker.heartbeat import context_length

    engine = build_engine(loaded=loaded_model, settings=engine_settings)
    assert isinstance(engine, StaticEngine)
    assert engine.cache_tokens == 512
    assert context_length(engine) == 512


async def test_a_request_that_finished_before_the_engine_stopped_keeps_its_tokens(
    static_engine, loaded_model
):
    """A caller behind on a request that already ended gets all its tokens, not the stop's error."""
    ids = loaded_model.tokenizer(PROMPTS[0])["input_ids"]
    expected = _reference(loaded_model.model, ids, 6)
    loop = static_engine._loop_thread
    emit, first_seen = loop.emit, threading.Event()

    def emit_then_wait(batch) -> None:  # the thread waits until the caller has its first token
        emit(batch)
        first_seen.wait(30)

    loop.emit = emit_then_wait
    got: list[int] = []
    async for new in static_engine.stream("slow", ids, max_new_tokens=6, sampling=Sampling()):
        if not got:  # a slow caller (publishing to Redis) while the request runs to its end
            assert len(new) < 6  # the prefill step: the request is still running
            first_seen.set()
            for _ in range(1000):
                if loop.scheduler.idle:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # its last tokens are on the stream's queue
            await static_engine.stop()
        got.extend(new)
    assert got == expected


def test_a_closed_event_loop_ends_the_generation_thread_without_an_unhandled_error(
    loaded_model, engine_settings, monkeypatch
):
    """Tokens with no event loop to take them end the thread cleanly, not with a thread crash."""
    crashes: list[object] = []
    monkeypatch.setattr(threading, "excepthook", crashes.append)
    engine = StaticEngine(loaded=loaded_model, settings=engine_settings)
    ids = loaded_model.tokenizer(PROMPTS[0])["input_ids"]
    loop = asyncio.new_event_loop()
    orphan = engine.stream("orphan", ids, max_new_tokens=400, sampling=Sampling())
    closed, emitted = threading.Event(), []

    async def running() -> None:
        await engine.start()
        emit = engine._loop_thread.emit

        def first_then_once_closed(batch) -> None:  # however busy the machine, it stays unfinished
            if emitted:
                closed.wait(30)
            emitted.append(batch)
            emit(batch)

        engine._loop_thread.emit = first_then_once_closed
        await anext(orphan)  # running; nobody reads it again before the loop closes

    loop.run_until_complete(running())
    thread = engine._loop_thread
    loop.close()
    closed.set()
    thread._thread.join(30)
    assert not thread._thread.is_alive()
    assert crashes == []
    with contextlib.suppress(StopIteration):  # its finally, run by hand: no loop is left
        orphan.aclose().send(None)
