"""OpenAI clients cannot tell the difference: shapes, errors and model names on ``/v1``.

Driven over a real socket by the official ``openai`` client (async, sync and streaming)
and by raw HTTP, whose JSON is checked against OpenAI's published API description (the
fields it requires, below) and parsed with the ``openai`` package's own types. No model
runs: the test plays the worker, writing heartbeats and a job's events into Redis as a
worker does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import openai
import pytest
from openai.types import Completion
from openai.types import Model as OpenAIModel
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel

from services.gateway.http.app import create_app
from services.gateway.settings import load_settings
from services.protocol import names
from services.protocol.heartbeats import send_heartbeat, withdraw
from services.protocol.messages import (
    DoneEvent,
    ErrorEvent,
    GenerateResult,
    StatusEvent,
    Timings,
    TokenEvent,
    Usage,
)
from services.worker.publisher import EventPublisher
from tests.support import live_heartbeat

HUB_ID = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
CHAT = [{"role": "user", "content": "Hello, llama!"}]

# What OpenAI's published description (openai/openai-openapi, openapi.yaml) requires of
# each object; the ``openai`` package's types leave nullable fields optional, so a missing
# ``logprobs`` would parse there and still break a strict client.
REQUIRED: dict[str, set[str]] = {
    "chat.completion": {"id", "object", "created", "model", "choices"},
    "chat.completion/choice": {"finish_reason", "index", "message", "logprobs"},
    "chat.completion/message": {"role", "content", "refusal"},
    "chat.completion.chunk": {"id", "object", "created", "model", "choices"},
    "chat.completion.chunk/choice": {"delta", "finish_reason", "index"},
    "text_completion": {"id", "object", "created", "model", "choices"},
    "text_completion/choice": {"finish_reason", "index", "logprobs", "text"},
    "usage": {"prompt_tokens", "completion_tokens", "total_tokens"},
    "model": {"id", "object", "created", "owned_by"},
    "list": {"object", "data"},
    "error": {"message", "type", "param", "code"},
}
TYPES: dict[str, type[BaseModel]] = {
    "chat.completion": ChatCompletion,
    "chat.completion.chunk": ChatCompletionChunk,
    "text_completion": Completion,
    "model": OpenAIModel,
}


def conforms(data: dict[str, Any]) -> None:
    """``data`` has every field OpenAI requires of its object and parses as the SDK's type."""
    kind = data["object"]
    assert REQUIRED[kind] <= data.keys(), (kind, REQUIRED[kind] - data.keys())
    for choice in data.get("choices", []):
        assert REQUIRED[f"{kind}/choice"] <= choice.keys(), (kind, choice)
        if "message" in choice:
            assert REQUIRED[f"{kind}/message"] <= choice["message"].keys(), choice
    if data.get("usage") is not None:
        assert REQUIRED["usage"] <= data["usage"].keys()
    if kind == "list":
        for model in data["data"]:
            conforms(model)
        return
    if kind == "text_completion" and any(c["finish_reason"] is None for c in data["choices"]):
        # A text stream's chunks carry ``finish_reason: null`` until the last, as OpenAI's own
        # do, though its description (and so the SDK's type) lists no null: presence only.
        data = {**data, "choices": [{**c, "finish_reason": "stop"} for c in data["choices"]]}
    TYPES[kind].model_validate(data, strict=True)


def error_conforms(data: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's ``ErrorResponse``: one ``error`` with exactly its four fields; returns it."""
    assert data.keys() == {"error"}, data
    error = data["error"]
    assert error.keys() == REQUIRED["error"], error
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["type"], str)
    assert error["param"] is None or isinstance(error["param"], str)
    assert error["code"] is None or isinstance(error["code"], str)
    return error


async def heartbeat(redis, *, model: str = HUB_ID, worker_id: str = "w1", **limits) -> None:
    """Say, as a live ready worker does, that ``model`` is served."""
    await send_heartbeat(redis, live_heartbeat(worker_id, model, **limits), ttl_s=60)


async def play_worker(
    redis, *, text: str = "Hello there!", pieces: tuple[str, ...] = ("Hello", " there!")
) -> str:
    """Take the one queued job as a worker would: running, token deltas, then the result."""
    for _ in range(200):
        queued = await redis.zrange(names.QUEUE_NAME, 0, -1)
        if queued:
            break
        await asyncio.sleep(0.02)
    job_id = queued[0].decode()
    publisher = EventPublisher(redis, job_id, ttl_s=60)
    await publisher.publish(StatusEvent(status="running", worker="w1"))
    offset = 0
    for seq, piece in enumerate(pieces):
        await publisher.publish(TokenEvent(seq=seq, offset=offset, text=piece))
        offset += len(piece)
    usage = Usage(prompt_tokens=7, completion_tokens=len(pieces), total_tokens=7 + len(pieces))
    timings = Timings(queued_s=0.01, first_token_s=0.02, generation_s=0.05, total_s=0.06)
    result = GenerateResult(
        text=text, finish_reason="stop", model=HUB_ID, usage=usage, timings=timings
    )
    await publisher.finish(DoneEvent(result=result))
    return job_id


async def fail_job(redis, *, code: str, message: str) -> None:
    """Fail the one queued job as a worker would."""
    for _ in range(200):
        queued = await redis.zrange(names.QUEUE_NAME, 0, -1)
        if queued:
            break
        await asyncio.sleep(0.02)
    await EventPublisher(redis, queued[0].decode(), ttl_s=60).finish(
        ErrorEvent(code=code, message=message)
    )


def sdk(app, token: str) -> openai.AsyncOpenAI:
    """The official async client on ``app``'s /v1, ``token`` its API key, no retries."""
    return openai.AsyncOpenAI(
        base_url=str(app.make_url("/v1")), api_key=token, max_retries=0, timeout=30
    )


@pytest.fixture
def settings(gateway_settings):
    """The test gateway, waiting 0.3 s for a result (a 504 then means: queued)."""
    return dataclasses.replace(gateway_settings, wait_timeout_s=0.3)


@pytest.fixture
async def http(aiohttp_client, settings, redis):
    """The real gateway app on a loopback socket."""
    return await aiohttp_client(create_app(settings))


@pytest.fixture
def auth(make_token) -> dict[str, str]:
    """A valid bearer token's header."""
    return {"Authorization": f"Bearer {make_token()}"}


@pytest.fixture
async def client(http, make_token):
    """The official async client; our JWT is its API key; no retries."""
    async with sdk(http, make_token()) as client:
        yield client


@pytest.fixture
def sync_client(http, make_token):
    """The official sync client (call it in a thread: the server shares this loop)."""
    with openai.OpenAI(
        base_url=str(http.make_url("/v1")), api_key=make_token(), max_retries=0, timeout=30
    ) as client:
        yield client


# ------------------------------------------------------------------------- answers


async def test_chat_completion_json_is_what_openai_describes(http, auth, redis):
    """A chat answer carries every field OpenAI requires (``logprobs``, ``refusal`` as null)."""
    await heartbeat(redis)
    request = http.post(
        "/v1/chat/completions", json={"model": HUB_ID, "messages": CHAT}, headers=auth
    )
    response, _ = await asyncio.gather(request, play_worker(redis))
    assert response.status == 200
    data = await response.json()
    conforms(data)
    choice = data["choices"][0]
    assert choice["logprobs"] is None
    assert choice["message"] == {"role": "assistant", "content": "Hello there!", "refusal": None}
    assert data["model"] == HUB_ID


async def test_text_completion_json_is_what_openai_describes(http, auth, redis):
    """A text completion carries ``choices[].logprobs`` (null) and its usage."""
    await heartbeat(redis)
    request = http.post(
        "/v1/completions", json={"model": "tinyllama", "prompt": "Hi"}, headers=auth
    )
    response, _ = await asyncio.gather(request, play_worker(redis))
    data = await response.json()
    conforms(data)
    assert data["choices"][0]["logprobs"] is None
    assert data["usage"]["total_tokens"] == 9


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_every_stream_chunk_is_what_openai_describes(http, auth, redis, path):
    """Each ``data:`` chunk of a stream (usage chunk included) conforms; ``[DONE]`` ends it."""
    await heartbeat(redis)
    body = {"stream": True, "stream_options": {"include_usage": True}}
    body |= {"messages": CHAT} if "chat" in path else {"prompt": "Hi"}
    response = await http.post(path, json=body, headers=auth)
    _, raw = await asyncio.gather(play_worker(redis), response.text())
    events = [line.removeprefix("data: ") for line in raw.splitlines() if line.startswith("data:")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for chunk in chunks:
        conforms(chunk)
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 2
    if "chat" not in path:  # OpenAI's text usage is not nullable: absent until the last chunk
        assert all("usage" not in c for c in chunks[:-1])


async def test_official_clients_parse_answers_sync_async_and_streamed(client, sync_client, redis):
    """The SDK's async, sync and streaming calls all return the worker's text and usage."""
    await heartbeat(redis)
    answer, _ = await asyncio.gather(
        client.chat.completions.create(model=HUB_ID, messages=CHAT), play_worker(redis)
    )
    assert answer.choices[0].message.content == "Hello there!"
    assert answer.choices[0].message.refusal is None
    text, _ = await asyncio.gather(
        asyncio.to_thread(sync_client.completions.create, model="tinyllama", prompt="Hi"),
        play_worker(redis),
    )
    assert text.choices[0].text == "Hello there!"
    assert text.usage.prompt_tokens == 7

    async def streamed() -> str:
        stream = await client.chat.completions.create(model=HUB_ID, messages=CHAT, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    joined, _ = await asyncio.gather(streamed(), play_worker(redis))
    assert joined == "Hello there!"


# -------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("extra", "param", "code"),
    [
        ({"n": 2}, "n", "unsupported_parameter"),
        ({"temperature": 5}, "temperature", None),
        ({"max_tokens": 0}, "max_tokens", None),
        ({"stop": ["x" * 65]}, "stop[0]", None),
    ],
)
async def test_bad_parameters_are_400_naming_the_param(client, extra, param, code):
    """OpenAI's 400 ``invalid_request_error`` with ``param`` set: the SDK's BadRequestError."""
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(**{"model": "tinyllama", "messages": CHAT, **extra})
    error = caught.value
    assert (error.status_code, error.param, error.code) == (400, param, code)
    assert error.type == "invalid_request_error"
    assert error.message.startswith("Error code: 400 - ")  # the SDK appends our message
    assert len(error.message) > len("Error code: 400 - ")
    assert error.response.headers["Content-Type"].startswith("application/json")
    error_conforms(error.response.json())
    assert error.request_id == error.response.headers["X-Request-Id"]


async def test_auth_failure_is_openais_401_and_keeps_the_challenge(client):
    """No token: AuthenticationError, code ``invalid_api_key``, ``WWW-Authenticate`` kept."""
    with pytest.raises(openai.AuthenticationError) as caught:
        await client.models.list(extra_headers={"Authorization": openai.Omit()})
    assert caught.value.code == "invalid_api_key"
    assert caught.value.response.headers["WWW-Authenticate"].startswith("Bearer ")
    error_conforms(caught.value.response.json())


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/completions", b"{not json", 400),
        ("POST", "/v1/embeddings", b"{}", 404),
        ("DELETE", "/v1/models", b"", 405),
    ],
)
async def test_every_v1_error_is_an_openai_error_object(http, auth, method, path, body, status):
    """Bad JSON, an unknown /v1 route, a wrong method: OpenAI's error object, never a problem."""
    headers = {**auth, "Content-Type": "application/json"}
    response = await http.request(method, path, data=body, headers=headers)
    assert response.status == status
    assert response.headers["Content-Type"].startswith("application/json")
    error_conforms(await response.json())


async def test_native_routes_keep_problem_json(http, auth):
    """Outside /v1 errors stay RFC 9457 problems."""
    response = await http.post("/infer", json={"prompt": ""}, headers=auth)
    assert response.status == 422
    assert response.headers["Content-Type"] == "application/problem+json"
    assert (await response.json())["errors"][0]["path"] == "$.prompt"


async def test_rate_limit_is_openais_429_with_retry_after(aiohttp_client, settings, make_token):
    """Past the rate limit: RateLimitError, code ``rate_limit_exceeded``, Retry-After kept."""
    app = await aiohttp_client(create_app(dataclasses.replace(settings, rate_limit=0.01)))
    async with sdk(app, make_token("quick")) as client:
        with pytest.raises(openai.APIStatusError):  # admitted, then not done within the wait
            await client.completions.create(model="tinyllama", prompt="one")
        with pytest.raises(openai.RateLimitError) as caught:
            await client.completions.create(model="tinyllama", prompt="two")
    assert caught.value.code == "rate_limit_exceeded"
    assert int(caught.value.response.headers["Retry-After"]) >= 1


async def test_a_job_the_worker_could_not_run_is_503_with_retry_after(client, redis):
    """A worker shutting down under the job: 503 ``server_error`` with Retry-After."""
    with pytest.raises(openai.InternalServerError) as caught:
        await asyncio.gather(
            client.completions.create(model="tinyllama", prompt="hi"),
            fail_job(redis, code="shutdown", message="the worker is shutting down"),
        )
    error = caught.value
    assert (error.status_code, error.type, error.code) == (
        503,
        "server_error",
        "worker_unavailable",
    )
    assert "shutting down" in error.message
    assert int(error.response.headers["Retry-After"]) >= 1


async def test_a_failed_stream_ends_with_openais_error_object(client, http, auth, redis):
    """Mid-stream failure: ``data: {"error": …}`` then ``[DONE]``; the SDK raises it."""
    stream = await client.chat.completions.create(model="tinyllama", messages=CHAT, stream=True)
    first, _ = await asyncio.gather(
        anext(stream),
        fail_job(redis, code="worker_crashed", message="the job crashed its worker twice"),
    )
    assert first.choices[0].delta.role == "assistant"
    with pytest.raises(openai.APIError) as caught:
        await anext(stream)
    assert (caught.value.code, caught.value.type) == ("worker_crashed", "server_error")
    assert "crashed its worker twice" in caught.value.message
    response = await http.post(
        "/v1/completions", json={"prompt": "x", "stream": True}, headers=auth
    )
    _, raw = await asyncio.gather(
        fail_job(redis, code="budget_exhausted", message="spent"), response.text()
    )
    events = [line.removeprefix("data: ") for line in raw.splitlines() if line.startswith("data:")]
    assert events[-1] == "[DONE]"
    error = error_conforms(json.loads(events[-2]))
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")


# -------------------------------------------------------------------------- models


async def test_an_unknown_model_is_404_model_not_found(client, redis):
    """Like OpenAI and vLLM: NotFoundError, code ``model_not_found``, naming what is served."""
    await heartbeat(redis)
    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(model="gpt-4o", messages=CHAT)
    error = caught.value
    assert (error.code, error.param, error.type) == (
        "model_not_found",
        "model",
        "invalid_request_error",
    )
    assert "gpt-4o" in error.message
    assert HUB_ID in error.message


async def test_models_lists_the_served_model_then_its_aliases(client, http, auth, redis):
    """GET /v1/models: the live workers' model, then ``tinyllama``; each conforms."""
    await heartbeat(redis)
    models = await client.models.list()
    assert [m.id for m in models.data] == [HUB_ID, "tinyllama"]
    assert {m.owned_by for m in models.data} == {"tinyllama"}
    conforms(await (await http.get("/v1/models", headers=auth)).json())


async def test_retrieve_model_by_hub_id_or_alias(client, sync_client, redis):
    """GET /v1/models/{id}: the SDK's retrieve, a `/` in a hub id included; others 404."""
    await heartbeat(redis)
    assert (await client.models.retrieve(HUB_ID)).id == HUB_ID
    alias = await asyncio.to_thread(sync_client.models.retrieve, "tinyllama")
    assert (alias.id, alias.object) == ("tinyllama", "model")
    with pytest.raises(openai.NotFoundError) as caught:
        await client.models.retrieve("gpt-4o")
    assert caught.value.code == "model_not_found"


async def test_scaled_to_zero_the_last_served_model_is_still_accepted(client, redis):
    """No live worker (the fleet stopped): /v1/models still lists the model workers served
    last, and a request naming it is queued (it would start the fleet), not refused."""
    await heartbeat(redis)
    warm = [m.id for m in (await client.models.list()).data]
    await withdraw(redis, worker_id="w1")
    cold = [m.id for m in (await client.models.list()).data]
    assert cold == warm == [HUB_ID, "tinyllama"]
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(model=HUB_ID, messages=CHAT)
    assert caught.value.code == "wait_timeout"  # queued, waiting for a worker


async def test_never_seen_a_worker_only_aliases_are_known(client):
    """A fresh deployment, nothing served yet: the aliases are listed and accepted."""
    assert [m.id for m in (await client.models.list()).data] == ["tinyllama"]
    with pytest.raises(openai.APIStatusError) as queued:
        await client.completions.create(model="tinyllama", prompt="hi")
    assert queued.value.code == "wait_timeout"
    with pytest.raises(openai.NotFoundError):
        await client.completions.create(model=HUB_ID, prompt="hi")


async def test_model_aliases_come_from_the_setting(aiohttp_client, settings, make_token, redis):
    """TINYLLAMA_MODEL_ALIASES replaces the default alias list."""
    assert load_settings(
        {"TINYLLAMA_JWKS_URL": "file:///dev/null", "TINYLLAMA_MODEL_ALIASES": "small, llama"}
    ).model_aliases == ("small", "llama")
    app = await aiohttp_client(create_app(dataclasses.replace(settings, model_aliases=("small",))))
    await heartbeat(redis)
    async with sdk(app, make_token()) as client:
        assert [m.id for m in (await client.models.list()).data] == [HUB_ID, "small"]
        with pytest.raises(openai.NotFoundError):
            await client.completions.create(model="tinyllama", prompt="hi")
