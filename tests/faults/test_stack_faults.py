"""The whole stack (gateway, worker, Redis: real processes) while parts of it are broken."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import aiohttp
import pytest

from services.protocol import names
from services.protocol.messages import StatusEvent
from services.protocol.serializer import decode_event
from tests.faults.stack import read_stream, tracebacks

pytestmark = pytest.mark.slow
LONG = {"prompt": "tell me everything", "max_new_tokens": 1500, "temperature": 0}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _until_first_token(response: aiohttp.ClientResponse) -> list[str]:
    """Read SSE lines up to the first text the job produced."""
    lines = []
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        lines.append(line)
        if line.startswith("data:") and ('"text"' in line or '"content":"' in line):
            if not line.endswith('"text":""}') and '"content":""' not in line:
                return lines
    raise AssertionError(f"stream ended before any text: {lines}")


async def test_a_worker_killed_mid_job_leaves_one_coherent_text(
    start_gateway, start_worker, fault_client, make_token
):
    """kill -9 of the worker mid-job: another worker finishes it; the client sees one text."""
    gateway = await start_gateway()
    first = start_worker()
    await first.ready(fault_client)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        response = await session.post(
            f"{gateway.url}/infer?mode=stream", json=LONG, headers=_auth(make_token("victim"))
        )
        assert response.status == 200
        job_id = response.headers["X-Job-Id"]
        head = await _until_first_token(response)
        first.signal(signal.SIGKILL)
        second = start_worker()
        events = await read_stream(response)
    streamed = "".join(
        json.loads(line[5:])["text"]
        for line in head
        if line.startswith("data:") and '"text"' in line
    ) + "".join(json.loads(data)["text"] for event, data in events if event == "token")
    assert events[-1][0] == "done", events[-3:]
    result = json.loads(events[-1][1])
    assert result["text"] == streamed  # one text: nothing repeated, nothing missing
    assert result["usage"]["completion_tokens"] > 0
    stored = await fault_client.xrange(names.events_key(job_id))
    runs = [
        event.worker
        for _, fields in stored
        if isinstance(event := decode_event(fields[names.EVENT_FIELD.encode()]), StatusEvent)
        and event.status == "running"
    ]
    assert runs == [first.worker_id, second.worker_id]


async def test_a_redis_restart_mid_stream_ends_streams_and_the_stack_serves_again(
    start_gateway, start_worker, fault_redis, fault_client, make_token
):
    """Redis restarted under two live streams (native, OpenAI): both end within 30 s; then the
    same gateway and worker processes serve a new job."""
    gateway = await start_gateway()
    worker = start_worker()
    await worker.ready(fault_client)
    headers = _auth(make_token("survivor"))
    chat = {
        "model": "tinyllama",
        "messages": [{"role": "user", "content": "go on"}],
        "max_tokens": 1500,
        "temperature": 0,
        "stream": True,
    }
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        native = await session.post(f"{gateway.url}/infer?mode=stream", json=LONG, headers=headers)
        openai = await session.post(
            f"{gateway.url}/v1/chat/completions", json=chat, headers=headers
        )
        assert native.status == openai.status == 200
        await asyncio.gather(_until_first_token(native), _until_first_token(openai))
        fault_redis.kill()
        await asyncio.sleep(1.0)
        fault_redis.start()
        started = time.monotonic()
        native_events, openai_events = await asyncio.wait_for(
            asyncio.gather(read_stream(native), read_stream(openai)), timeout=30
        )
        assert time.monotonic() - started < 30
        assert native_events[-1][0] in ("done", "error")
        assert openai_events[-1][1] == "[DONE]"

        await worker.ready(fault_client, timeout_s=30)
        after = await session.post(
            f"{gateway.url}/infer",
            json={"prompt": "again", "max_new_tokens": 8},
            headers=headers,
        )
        assert after.status == 200, await after.text()
        assert (await after.json())["status"] == "succeeded"
    assert worker.process.poll() is None
    assert gateway.process.poll() is None
    assert tracebacks(gateway.output()) == []
    assert "Task exception was never retrieved" not in worker.output()
