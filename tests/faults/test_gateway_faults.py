"""The gateway process under faults and hostile clients: what a client sees, over a socket."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time

import aiohttp
import pytest

from tests.faults.stack import read_stream, tracebacks
from tests.support import JwksServer, new_rsa_key

CHAT = {"model": "tinyllama", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _open_streams(session, url: str, headers: dict[str, str]):
    native = await session.post(
        f"{url}/infer?mode=stream", json={"prompt": "hello"}, headers=headers
    )
    openai = await session.post(f"{url}/v1/chat/completions", json=CHAT, headers=headers)
    assert native.status == openai.status == 200
    return native, openai


async def test_streams_end_cleanly_when_redis_dies_and_the_gateway_recovers(
    start_gateway, fault_redis, make_token
):
    """Redis killed mid-stream: both routes end their stream with an error; later calls work."""
    gateway = await start_gateway()
    headers = _auth(make_token("streamer"))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        native, openai = await _open_streams(session, gateway.url, headers)
        await asyncio.sleep(0.5)  # both are following their (queued) jobs now
        fault_redis.kill()
        started = time.monotonic()
        native_events, openai_events = await asyncio.gather(
            read_stream(native), read_stream(openai)
        )
        assert time.monotonic() - started < 30
        assert native_events[-1][0] == "error"
        assert '"code":"unavailable"' in native_events[-1][1]
        assert openai_events[-2][1].startswith('{"error":')
        assert openai_events[-1][1] == "[DONE]"
        assert not any(data.startswith("HTTP/1.1") for _, data in native_events)

        down = await session.post(
            f"{gateway.url}/infer?mode=async", json={"prompt": "x"}, headers=headers
        )
        assert down.status == 503
        assert int(down.headers["Retry-After"]) >= 1

        fault_redis.start()
        again = await session.post(
            f"{gateway.url}/infer?mode=async", json={"prompt": "x"}, headers=headers
        )
        assert again.status == 202, await again.text()
        native, openai = await _open_streams(session, gateway.url, headers)
        native.close()
        openai.close()
    assert gateway.process.poll() is None
    assert tracebacks(gateway.output()) == []


async def test_a_waiting_request_gets_a_503_when_redis_dies(start_gateway, fault_redis, make_token):
    """A blocking ``/v1`` completion whose queue dies answers 503 + Retry-After, not a 504."""
    gateway = await start_gateway()
    body = {"model": "tinyllama", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        waiting = asyncio.ensure_future(
            session.post(
                f"{gateway.url}/v1/chat/completions", json=body, headers=_auth(make_token("w"))
            )
        )
        await asyncio.sleep(0.5)
        fault_redis.kill()
        response = await waiting
        assert response.status == 503, await response.text()
        assert int(response.headers["Retry-After"]) >= 1


async def test_a_paused_redis_is_a_prompt_503(start_gateway, fault_client, make_token):
    """With Redis paused for 4 s, a request gets 503 + Retry-After within the Redis timeout."""
    gateway = await start_gateway(TINYLLAMA_REDIS_TIMEOUT="1")
    headers = _auth(make_token("patient"))
    async with aiohttp.ClientSession() as session:
        warm = await session.post(
            f"{gateway.url}/infer?mode=async", json={"prompt": "x"}, headers=headers
        )
        assert warm.status == 202
        await fault_client.execute_command("CLIENT", "PAUSE", "4000", "ALL")
        started = time.monotonic()
        response = await session.post(
            f"{gateway.url}/infer?mode=async", json={"prompt": "x"}, headers=headers
        )
        elapsed = time.monotonic() - started
        assert response.status == 503
        assert int(response.headers["Retry-After"]) >= 1
        assert elapsed < 3.5, elapsed
        await asyncio.sleep(4 - elapsed)
        after = await session.post(
            f"{gateway.url}/infer?mode=async", json={"prompt": "x"}, headers=headers
        )
        assert after.status == 202


async def test_streams_share_one_reader_and_a_bounded_pool(start_gateway, fault_client, make_token):
    """Twenty open streams hold a handful of Redis connections, not one each."""
    gateway = await start_gateway()
    before = len(await fault_client.client_list())
    async with aiohttp.ClientSession() as session:
        streams = []
        for i in range(20):
            headers = _auth(make_token(f"fan-{i % 4}"))
            response = await session.post(
                f"{gateway.url}/infer?mode=stream", json={"prompt": f"{i}"}, headers=headers
            )
            assert response.status == 200
            streams.append(response)
        await asyncio.sleep(1.5)
        held = len(await fault_client.client_list()) - before
        for response in streams:
            response.close()
    assert held <= 6, held


def _slow_request(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST /infer HTTP/1.1\r\nHost: x\r\n")
    return sock


def _closed(sock: socket.socket) -> bool:
    try:
        sock.sendall(b"X-Slow: 1\r\n")
        sock.settimeout(0.2)
        return sock.recv(1024) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


async def test_slowloris_connections_are_closed_after_the_header_timeout(start_gateway):
    """Headers trickled a line at a time are cut off; an idle keep-alive connection is not."""
    gateway = await start_gateway(TINYLLAMA_HEADER_TIMEOUT="1")
    slow = [_slow_request(gateway.port) for _ in range(11)]
    idle = socket.create_connection(("127.0.0.1", gateway.port), timeout=5)
    idle.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle.recv(4096).startswith(b"HTTP/1.1 200")
    await asyncio.sleep(2.5)  # the 1 s header timeout, and some
    closed = sum(_closed(s) for s in slow)
    idle.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = idle.recv(4096)
    for sock in [*slow, idle]:
        sock.close()
    assert closed == 11
    assert reply.startswith(b"HTTP/1.1 200")


async def test_a_long_stream_outlives_the_header_timeout(start_gateway, make_token):
    """A stream whose body came in its own packet is not cut by the header timeout.

    Guards the fix for a race seen in CI (a body's bytes that arrive before aiohttp
    starts the handler started the header clock, and a 10 s stream was cut); this
    test does not force that race, it pins the behaviour around it.
    """
    gateway = await start_gateway(TINYLLAMA_HEADER_TIMEOUT="1")
    body = b'{"prompt": "no worker: this job waits"}'
    head = (
        "POST /infer?mode=stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {make_token('patient')}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    sock.sendall(head.encode())
    await asyncio.sleep(0.2)
    sock.sendall(body)  # the body on its own, after the headers
    received = b""
    deadline = time.monotonic() + 3.5  # past the 1 s header timeout, and some
    while time.monotonic() < deadline:
        chunk = await asyncio.to_thread(sock.recv, 4096)
        if not chunk:
            break
        received += chunk
    still_open = not _closed(sock)
    sock.close()
    assert received.startswith(b"HTTP/1.1 200")
    assert received.count(b": ping") >= 2  # the stream's keep-alive comments kept coming
    assert still_open


async def test_a_slow_body_is_a_408(start_gateway, make_token):
    """A body that never finishes arriving is answered 408 after the body timeout."""
    gateway = await start_gateway(TINYLLAMA_BODY_TIMEOUT="1")
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    head = (
        "POST /infer?mode=async HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {make_token('slowbody')}\r\nContent-Length: 100\r\n\r\n"
    )
    sock.sendall(head.encode() + b'{"prompt": ')
    reply = await asyncio.to_thread(sock.recv, 4096)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"application/problem+json" in reply


async def test_a_huge_authorization_header_is_refused_quietly(start_gateway):
    """A 10 KB Authorization header is a 431 problem; the log holds no part of it, no error."""
    gateway = await start_gateway()
    secret = "eyJ" + "S3cr3tT0k3n" * 1000
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            f"{gateway.url}/infer", json={"prompt": "x"}, headers=_auth(secret)
        )
        body = await response.text()
    assert response.status == 431
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert "S3cr3t" not in body
    await asyncio.sleep(0.2)
    log = gateway.output()
    assert "S3cr3t" not in log
    assert tracebacks(log) == []


async def test_cached_keys_keep_working_while_the_jwks_server_is_down(
    start_gateway, make_token, signing_key
):
    """The IdP's JWKS endpoint down: tokens signed with known keys still pass, others get 401."""
    jwks = JwksServer([signing_key])
    url = await jwks.start()
    gateway = await start_gateway(jwks_url=url, TINYLLAMA_JWKS_REFRESH="0.5")
    await jwks.stop()
    await asyncio.sleep(1.5)  # a few failed refreshes
    async with aiohttp.ClientSession() as session:
        known = await session.post(
            f"{gateway.url}/infer?mode=async",
            json={"prompt": "x"},
            headers=_auth(make_token("loyal")),
        )
        stranger = await session.post(
            f"{gateway.url}/infer?mode=async",
            json={"prompt": "x"},
            headers=_auth(make_token("loyal", key=new_rsa_key("rogue"))),
        )
    assert known.status == 202
    assert stranger.status == 401
    assert gateway.process.poll() is None


async def test_a_burst_from_one_user_passes_exactly_the_rate_limit(start_gateway, make_token):
    """Fifty requests at once from one user: the bucket's allowance passes, the rest get 429."""
    rate = 5.0
    gateway = await start_gateway(TINYLLAMA_RATE_LIMIT=str(rate))
    headers = _auth(make_token("burst"))
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> tuple[int, str | None]:
            async with session.post(
                f"{gateway.url}/infer?mode=async", json={"prompt": f"{i}"}, headers=headers
            ) as response:
                return response.status, response.headers.get("Retry-After")

        started = time.monotonic()
        replies = await asyncio.gather(*(one(i) for i in range(50)))
        elapsed = time.monotonic() - started
    passed = sum(status == 202 for status, _ in replies)
    refused = [after for status, after in replies if status == 429]
    assert passed + len(refused) == 50
    assert rate <= passed <= rate + int(rate * elapsed) + 1, (passed, elapsed)
    assert all(after is not None and int(after) >= 1 for after in refused)


@pytest.mark.parametrize("path", ["/infer?mode=async", "/v1/chat/completions"])
async def test_garbage_bodies_never_get_a_5xx(start_gateway, make_token, path):
    """Random bytes and random JSON at the body-taking routes: 4xx every time, never 5xx."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    gateway = await start_gateway()
    headers = {**_auth(make_token("fuzzer")), "Content-Type": "application/json"}
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=12,
    )
    bodies = st.binary(max_size=256) | json_values.map(lambda v: json.dumps(v).encode())
    seen: list[int] = []

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies)
    def throw(body: bytes) -> None:
        seen.append(asyncio.run(_post(gateway.url + path, body, headers)))

    await asyncio.to_thread(throw)
    assert len(seen) >= 100
    assert max(seen) < 500, sorted(set(seen))
    assert tracebacks(gateway.output()) == []


async def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        await response.read()
        return response.status


async def test_sigterm_ends_open_streams_at_once_with_a_resumable_event(start_gateway, make_token):
    """SIGTERM with streams open: each ends within seconds saying how to resume; exit 0."""
    gateway = await start_gateway(TINYLLAMA_JOB_DEADLINE="300")
    headers = _auth(make_token("deployer"))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        native, openai = await _open_streams(session, gateway.url, headers)
        await asyncio.sleep(0.5)  # both are following their (queued) jobs now
        started = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        native_events, openai_events = await asyncio.gather(
            read_stream(native), read_stream(openai)
        )
        ended_in = time.monotonic() - started
    assert native_events[-1][0] == "error"
    final = json.loads(native_events[-1][1])
    assert final["code"] == "unavailable"
    assert "shutting down" in final["message"]
    assert "GET /jobs/" in final["message"]
    assert "shutting down" in json.loads(openai_events[-2][1])["error"]["message"]
    assert openai_events[-1][1] == "[DONE]"
    assert ended_in < 10  # not the 60 s shutdown timeout
    assert gateway.process.wait(timeout=20) == 0
    assert tracebacks(gateway.output()) == []
