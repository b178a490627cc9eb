"""Events reach Redis in order across a Redis restart, or the job learns they cannot."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.connections import create_pool
from redis.asyncio import Redis

from services.protocol import names
from services.protocol.messages import (
    DoneEvent,
    GenerateResult,
    Timings,
    TokenEvent,
    Usage,
)
from services.protocol.serializer import decode_event, encode_event
from services.worker.main import redis_settings
from services.worker.publisher import EventPublisher, StreamWriter
from tests.support import RedisServer

KEYS = (names.events_key("a"), names.events_key("b"))


@pytest.fixture
async def unretrieved() -> AsyncIterator[list[dict[str, Any]]]:
    """What asyncio reports as unhandled ("Task exception was never retrieved") in this test."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    yield reported
    loop.set_exception_handler(previous)


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A client built like the worker's (ARQ pool, its retry settings) on the private Redis."""
    redis = await create_pool(redis_settings(redis_server.url))
    yield redis
    await redis.aclose()


async def _append(writer: StreamWriter, sent: dict[str, list[bytes]], *, rounds: int) -> None:
    """Append one numbered entry per stream per round, a few milliseconds apart."""
    for _ in range(rounds):
        for key in KEYS:
            data = str(len(sent[key])).encode()
            sent[key].append(data)
            writer.append(key, data)
        await asyncio.sleep(0.005)


async def _entries(redis: Redis, key: str) -> list[bytes]:
    return [fields[names.EVENT_FIELD.encode()] for _, fields in await redis.xrange(key)]


def _first_arrivals(entries: list[bytes]) -> list[bytes]:
    """Entries in order of first arrival: a batch whose reply was lost may be written twice."""
    return list(dict.fromkeys(entries))


async def test_stream_writer_keeps_order_and_loses_nothing_across_a_redis_restart(
    redis_server, client, unretrieved
):
    """Entries appended before, during and after a restart all arrive, in order, none unhandled."""
    writer = StreamWriter(client)
    sent: dict[str, list[bytes]] = {key: [] for key in KEYS}
    await _append(writer, sent, rounds=40)
    redis_server.kill()
    await _append(writer, sent, rounds=80)  # about half a second with Redis away
    redis_server.start()
    await _append(writer, sent, rounds=40)
    await asyncio.wait_for(writer.flush(), timeout=30)
    for key in KEYS:
        got = await _entries(client, key)
        assert _first_arrivals(got) == sent[key]
        assert set(got) == set(sent[key])
    del writer
    gc.collect()
    await asyncio.sleep(0)
    assert unretrieved == []


async def test_appends_fail_once_redis_is_away_longer_than_the_delivery_timeout(
    redis_server, client, unretrieved
):
    """Past the delivery timeout an append raises DeliveryFailed; what was queued still lands."""
    from services.worker.outage import DeliveryFailed

    writer = StreamWriter(client, delivery_timeout_s=0.5)
    sent: dict[str, list[bytes]] = {key: [] for key in KEYS}
    await _append(writer, sent, rounds=5)
    redis_server.kill()
    await _append(writer, sent, rounds=5)
    await asyncio.sleep(1.0)
    with pytest.raises(DeliveryFailed):
        writer.append(KEYS[0], b"refused")
    redis_server.start()
    await asyncio.wait_for(writer.flush(), timeout=30)
    for key in KEYS:
        assert _first_arrivals(await _entries(client, key)) == sent[key]
    writer.append(KEYS[0], b"after")  # Redis answers again: appends are taken again
    await asyncio.wait_for(writer.flush(), timeout=30)
    assert (await _entries(client, KEYS[0]))[-1] == b"after"
    assert unretrieved == []


async def test_queued_entries_are_capped_with_a_clear_failure(redis_server, client):
    """With Redis away, the writer holds at most ``max_pending`` entries, then refuses more."""
    from services.worker.outage import DeliveryFailed

    writer = StreamWriter(client, max_pending=10)
    redis_server.kill()
    for n in range(10):
        writer.append(KEYS[0], str(n).encode())
    with pytest.raises(DeliveryFailed, match="10 events"):
        writer.append(KEYS[0], b"one too many")
    redis_server.start()
    await asyncio.wait_for(writer.flush(), timeout=30)
    assert _first_arrivals(await _entries(client, KEYS[0])) == [str(n).encode() for n in range(10)]


def _done(text: str) -> DoneEvent:
    return DoneEvent(
        result=GenerateResult(
            text=text,
            finish_reason="length",
            model="demo",
            usage=Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3),
            timings=Timings(queued_s=0.0, first_token_s=0.1, generation_s=0.2, total_s=0.3),
        )
    )


async def test_a_job_that_finishes_during_a_two_second_blip_still_delivers_its_done_event(
    redis_server, client, unretrieved
):
    """``finish`` retries across a blip: the tokens, then the DoneEvent, and the result key."""
    writer = StreamWriter(client)
    publisher = EventPublisher(client, "blip", ttl_s=60, writer=writer)
    tokens = [TokenEvent(seq=n, offset=n, text="x") for n in range(3)]
    for token in tokens[:2]:
        await publisher.publish(token)
    await writer.flush()
    redis_server.kill()
    await publisher.publish(tokens[2])

    async def restart_later() -> None:
        await asyncio.sleep(2.0)
        await asyncio.to_thread(redis_server.start)

    restart = asyncio.create_task(restart_later())
    assert await asyncio.wait_for(publisher.finish(_done("xxx")), timeout=30) is True
    await restart
    events = [
        decode_event(e) for e in _first_arrivals(await _entries(client, names.events_key("blip")))
    ]
    assert events == [*tokens, _done("xxx")]
    assert await client.get(names.result_key("blip")) == encode_event(_done("xxx"))
    assert unretrieved == []


async def test_a_batch_written_twice_is_resumed_from_once(client):
    """``previous_tokens`` takes each ``seq`` once: a re-sent batch repeats no ids on resume."""
    tokens = [TokenEvent(seq=n, offset=n, text="x", token_ids=[10 + n]) for n in range(3)]
    key = names.events_key("twice")
    for event in [tokens[0], tokens[1], tokens[0], tokens[1], tokens[2]]:
        await client.xadd(key, {names.EVENT_FIELD: encode_event(event)})
    publisher = EventPublisher(client, "twice", ttl_s=60)
    assert await publisher.previous_tokens() == ([10, 11, 12], 3, 3)
