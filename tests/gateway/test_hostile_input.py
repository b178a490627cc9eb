"""Hostile clients at the gateway: bodies, idempotency keys, the budget race, stream fan-out."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from services.gateway.http.app import create_app
from services.protocol import names
from services.protocol.periods import month_label


def _auth(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


async def _client(aiohttp_client, settings, **changes):
    return await aiohttp_client(create_app(dataclasses.replace(settings, **changes)))


async def test_invalid_utf8_inside_a_json_string_is_a_400(gateway, make_token):
    """A body whose JSON string holds invalid UTF-8 is a 400 problem, not a 500."""
    body = b'{"prompt": "caf\xc3\x28 \xff"}'
    for path in ("/infer?mode=async", "/v1/completions"):
        response = await gateway.post(
            path,
            data=body,
            headers=_auth(make_token(), **{"Content-Type": "application/json"}),
        )
        assert response.status == 400, (path, await response.text())
        body = await response.json()
        if path.startswith("/v1/"):  # OpenAI's error object
            assert body["error"]["code"] == "invalid_json"
        else:
            assert body["type"].endswith("/invalid-json")


async def test_idempotency_keys_of_two_users_never_collide(gateway, make_token):
    """Subject ``carol:b`` with key ``c`` and subject ``carol`` with key ``b:c`` get two jobs."""
    first = await gateway.post(
        "/infer?mode=async",
        json={"prompt": "one"},
        headers=_auth(make_token("carol:b"), **{"Idempotency-Key": "c"}),
    )
    second = await gateway.post(
        "/infer?mode=async",
        json={"prompt": "one"},
        headers=_auth(make_token("carol"), **{"Idempotency-Key": "b:c"}),
    )
    assert first.status == second.status == 202
    one, two = await first.json(), await second.json()
    assert one["id"] != two["id"]
    mine = await gateway.get(two["url"], headers=_auth(make_token("carol")))
    assert mine.status == 200


async def test_an_idempotency_key_reused_with_another_body_is_a_422(gateway, make_token):
    """The same key with a different body is refused (as Stripe does); the same body replays."""
    headers = _auth(make_token("dave"), **{"Idempotency-Key": "order-1"})
    first = await gateway.post("/infer?mode=async", json={"prompt": "one"}, headers=headers)
    replay = await gateway.post("/infer?mode=async", json={"prompt": "one"}, headers=headers)
    other = await gateway.post("/infer?mode=async", json={"prompt": "two"}, headers=headers)
    assert first.status == replay.status == 202
    assert (await first.json())["id"] == (await replay.json())["id"]
    assert other.status == 422
    problem = await other.json()
    assert problem["type"].endswith("/idempotency-key-reused")
    assert problem["errors"][0]["path"] == "Idempotency-Key"


async def test_a_replay_spends_no_rate_limit_token(
    aiohttp_client, gateway_settings, make_token, redis
):
    """With one token in the bucket, a replay of the admitted request is still answered."""
    client = await _client(aiohttp_client, gateway_settings, rate_limit=0.01)
    headers = _auth(make_token("erin"), **{"Idempotency-Key": "k"})
    first = await client.post("/infer?mode=async", json={"prompt": "x"}, headers=headers)
    replays = [
        await client.post("/infer?mode=async", json={"prompt": "x"}, headers=headers)
        for _ in range(3)
    ]
    fresh = await client.post(
        "/infer?mode=async", json={"prompt": "x"}, headers=_auth(make_token("erin"))
    )
    assert first.status == 202
    assert [r.status for r in replays] == [202, 202, 202]
    assert fresh.status == 429  # the bucket really was empty


async def test_not_one_job_is_admitted_past_the_budget_hard_stop(
    aiohttp_client, gateway_settings, make_token, redis
):
    """Concurrent requests right after the stop is crossed all get 402: no cached verdict."""
    client = await _client(
        aiohttp_client,
        gateway_settings,
        gpu_hourly_price_usd=3600.0,  # 1 GPU second = $1
        budget_hard_stop_usd=10.0,
    )
    headers = _auth(make_token("frank"))
    spent = names.gpu_seconds_key(month_label(time.time()))
    await redis.set(spent, "9.5")
    before = await client.post("/infer?mode=async", json={"prompt": "x"}, headers=headers)
    assert before.status == 202
    await redis.set(spent, "10.0")
    replies = await asyncio.gather(
        *(
            client.post("/infer?mode=async", json={"prompt": f"{i}"}, headers=headers)
            for i in range(7)
        )
    )
    assert [r.status for r in replies] == [402] * 7
    assert (await replies[0].json())["type"].endswith("/budget-exhausted")


async def test_one_job_cannot_fan_out_to_unbounded_streams(
    aiohttp_client, gateway_settings, make_token, redis
):
    """Past the per-job cap, another stream of the same job (same Idempotency-Key) is a 429."""
    client = await _client(aiohttp_client, gateway_settings, max_streams_per_job=2)
    headers = _auth(make_token("gina"), **{"Idempotency-Key": "fan"})
    opened = []
    for _ in range(2):
        response = await client.post("/infer?mode=stream", json={"prompt": "x"}, headers=headers)
        assert response.status == 200
        opened.append(response)
    third = await client.post("/infer?mode=stream", json={"prompt": "x"}, headers=headers)
    assert third.status == 429
    assert (await third.json())["type"].endswith("/too-many-streams")
    assert int(third.headers["Retry-After"]) >= 1
    for response in opened:
        response.close()


async def test_one_caller_cannot_hold_unbounded_streams(
    aiohttp_client, gateway_settings, make_token, redis
):
    """Past the per-caller cap a new stream is a 429; another caller still gets one."""
    client = await _client(aiohttp_client, gateway_settings, max_streams_per_subject=2)
    opened = []
    for i in range(2):
        response = await client.post(
            "/infer?mode=stream", json={"prompt": f"{i}"}, headers=_auth(make_token("hal"))
        )
        assert response.status == 200
        opened.append(response)
    refused = await client.post(
        "/infer?mode=stream", json={"prompt": "x"}, headers=_auth(make_token("hal"))
    )
    other = await client.post(
        "/infer?mode=stream", json={"prompt": "x"}, headers=_auth(make_token("ida"))
    )
    assert refused.status == 429
    assert other.status == 200
    for response in [*opened, refused, other]:
        response.close()


async def test_metrics_forwarded_by_a_load_balancer_is_a_404(gateway):
    """``/metrics`` reached through a proxy (``X-Forwarded-For``, even as ``/%6Detrics``) is 404."""
    direct = await gateway.get("/metrics")
    encoded = await gateway.get("/%6Detrics", headers={"X-Forwarded-For": "203.0.113.9"})
    forwarded = await gateway.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert direct.status == 200
    assert encoded.status == forwarded.status == 404
    assert "tinyllama_gateway" not in await encoded.text()
