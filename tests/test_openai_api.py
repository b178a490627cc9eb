"""The OpenAI-compatible routes, driven by the real ``openai`` client over real HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import openai
import pytest
from aiohttp import web

from services.gateway.http.app import create_app
from services.gateway.openai_api import routes as openai_routes
from tests.test_openai_compat import conforms, sdk

slow = pytest.mark.slow  # needs a real worker process with the demo model
CHAT = [{"role": "user", "content": "Hello, llama!"}]


def with_openai_routes(app: web.Application) -> web.Application:
    """Add the ``/v1`` routes unless ``create_app`` already wires them."""
    if not any(r.canonical == "/v1/models" for r in app.router.resources()):
        app.add_routes(openai_routes.routes)
    return app


@pytest.fixture
async def gateway_v1(aiohttp_client, gateway_settings, redis):
    """The real gateway app, OpenAI routes included, on a loopback socket."""
    return await aiohttp_client(with_openai_routes(create_app(gateway_settings)))


@pytest.fixture
async def client(gateway_v1, make_token):
    """The real ``openai`` async client, our JWT as its API key, no retries."""
    async with sdk(gateway_v1, make_token()) as client:
        yield client


@pytest.fixture(scope="module")
def worker(worker_factory):
    """One real worker process serving the demo model for this module."""
    return worker_factory()


@pytest.fixture
async def ready_worker(worker, redis):
    """The module's worker, after it has said it is ready."""
    await worker.ready(redis)
    return worker


# ---------------------------------------------------------------- no worker needed
# (these run before the module's worker starts: its heartbeats would fill /v1/models)


async def test_models_lists_the_alias_before_any_worker_was_seen(client):
    """GET /v1/models lists the configured alias while no worker has served anything yet."""
    models = await client.models.list()
    assert [m.id for m in models.data] == ["tinyllama"]


async def test_missing_token_is_401(client):
    """No Authorization header: the client raises AuthenticationError (401)."""
    with pytest.raises(openai.AuthenticationError) as caught:
        await client.chat.completions.create(
            model="tinyllama", messages=CHAT, extra_headers={"Authorization": openai.Omit()}
        )
    assert caught.value.status_code == 401
    assert caught.value.response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ],
)
async def test_unsupported_or_invalid_chat_input_is_400_naming_the_param(client, extra, param):
    """Options we cannot honour, and bad messages, are OpenAI's 400 naming ``param``."""
    kwargs = {"model": "tinyllama", "messages": CHAT, **extra}
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(**kwargs)
    assert caught.value.param == param
    assert caught.value.type == "invalid_request_error"
    assert caught.value.response.headers["Content-Type"].startswith("application/json")


async def test_completion_prompt_must_be_a_string(client):
    """/v1/completions takes one string prompt; a list of prompts is a 400 at ``prompt``."""
    with pytest.raises(openai.BadRequestError) as caught:
        await client.completions.create(model="tinyllama", prompt=["a", "b"])
    assert caught.value.param == "prompt"


async def test_wait_timeout_is_504_with_the_job_url(
    aiohttp_client, gateway_settings, redis, make_token
):
    """A job not done within the wait timeout is a 504 naming its /jobs/{id} URL, and the SDK
    is told not to retry (a retry would queue a second job)."""
    settings = dataclasses.replace(gateway_settings, wait_timeout_s=0.3)
    app = await aiohttp_client(with_openai_routes(create_app(settings)))
    with pytest.raises(openai.APIStatusError) as caught:
        async with sdk(app, make_token()) as client:
            await client.completions.create(model="tinyllama", prompt="hi")
    assert (caught.value.status_code, caught.value.code) == (504, "wait_timeout")
    assert caught.value.response.headers["x-should-retry"] == "false"
    job_url = caught.value.response.headers["Location"]
    assert job_url.startswith("/jobs/")
    assert job_url in caught.value.body["message"]
    job = await app.get(job_url, headers={"Authorization": f"Bearer {make_token()}"})
    assert (await job.json())["status"] == "queued"


async def test_leaving_a_stream_cancels_the_job(gateway_v1, make_token):
    """A client that closes its stream while the job waits gets that job cancelled."""
    headers = {"Authorization": f"Bearer {make_token()}"}
    response = await gateway_v1.post(
        "/v1/chat/completions",
        json={"model": "tinyllama", "messages": CHAT, "stream": True},
        headers=headers,
    )
    assert (await response.content.readline()).startswith(b"data: ")  # the role chunk
    job_url = response.headers["Location"]
    response.close()
    for _ in range(80):  # the handler notices at its next quiet tick (5 s at most)
        job = await (await gateway_v1.get(job_url, headers=headers)).json()
        if job["status"] == "cancelled":
            break
        await asyncio.sleep(0.1)
    assert job["status"] == "cancelled"


# ------------------------------------------------------------------- with a worker


@slow
async def test_models_names_the_served_model(client, ready_worker):
    """GET /v1/models lists the model the live worker serves."""
    models = await client.models.list()
    assert [m.id for m in models.data] == ["tinyllama-demo", "tinyllama"]
    assert models.data[0].owned_by == "tinyllama"
    assert models.data[0].object == "model"


@slow
async def test_chat_completion_returns_content_usage_and_finish_reason(client, ready_worker):
    """A chat completion is a chat.completion with the assistant's text, usage and a reason."""
    answer = await client.chat.completions.create(
        model="tinyllama-demo", messages=CHAT, max_tokens=12, temperature=0
    )
    assert answer.object == "chat.completion"
    assert answer.id.startswith("chatcmpl-")
    assert answer.model == "tinyllama-demo"
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = answer.usage
    assert usage.prompt_tokens > 0
    assert 1 <= usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@slow
async def test_greedy_chat_is_deterministic(client, ready_worker):
    """temperature=0 twice gives the identical answer."""
    answers = [
        await client.chat.completions.create(
            model="tinyllama", messages=CHAT, max_tokens=10, temperature=0
        )
        for _ in range(2)
    ]
    assert answers[0].choices[0].message.content == answers[1].choices[0].message.content


@slow
async def test_streamed_chat_equals_the_whole_answer(client, ready_worker):
    """Streamed deltas (role first, reason last, then usage) add up to the non-streamed answer."""
    request = {"model": "tinyllama", "messages": CHAT, "max_tokens": 10, "temperature": 0}
    whole = await client.chat.completions.create(**request)
    stream = await client.chat.completions.create(
        **request, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].object == "chat.completion.chunk"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == []
    assert chunks[-1].usage == whole.usage
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content


@slow
async def test_text_completion_continues_the_prompt(client, ready_worker):
    """/v1/completions answers a text_completion with text, usage and a finish reason."""
    answer = await client.completions.create(
        model="tinyllama", prompt="Once upon a time", max_tokens=8, temperature=0
    )
    assert answer.object == "text_completion"
    assert answer.id.startswith("cmpl-")
    assert isinstance(answer.choices[0].text, str)
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert 1 <= answer.usage.completion_tokens <= 8
    stream = await client.completions.create(
        model="tinyllama", prompt="Once upon a time", max_tokens=8, temperature=0, stream=True
    )
    text = "".join([chunk.choices[0].text async for chunk in stream])
    assert text == answer.choices[0].text


@slow
async def test_max_tokens_is_honoured(client, ready_worker):
    """completion_tokens never exceeds max_tokens, and hitting it reads finish_reason=length."""
    answer = await client.completions.create(
        model="tinyllama", prompt="count", max_tokens=3, temperature=1.0, seed=7
    )
    assert answer.usage.completion_tokens <= 3
    if answer.usage.completion_tokens == 3:
        assert answer.choices[0].finish_reason == "length"


@slow
async def test_request_too_large_for_the_model_is_400(client, ready_worker):
    """A prompt plus max_tokens past the model's context is the client's fault: 400, not 5xx,
    refused at the door from the context the worker reported (2048 tokens)."""
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="tinyllama", messages=CHAT, max_tokens=4096)
    assert (caught.value.code, caught.value.param) == ("context_length_exceeded", "max_tokens")
    assert "4096" in caught.value.message
    assert "2048" in caught.value.message


@slow
async def test_a_prompt_only_the_worker_can_tell_is_too_long_is_400_too(client, ready_worker):
    """Past the gateway's lower bound but not its door: the worker's exact count fails it,
    and the client still gets OpenAI's 400 ``context_length_exceeded``."""
    prompt = "hello " * 1500  # about 1500 tokens; the gateway can only prove ~580
    with pytest.raises(openai.BadRequestError) as caught:
        await client.completions.create(model="tinyllama", prompt=prompt, max_tokens=1000)
    assert caught.value.code == "context_length_exceeded"
    assert "2048" in caught.value.message


@slow
async def test_real_answers_are_what_openai_describes(gateway_v1, ready_worker, make_token):
    """A real worker's chat answer and text stream carry every field OpenAI requires."""
    headers = {"Authorization": f"Bearer {make_token()}"}
    answer = await gateway_v1.post(
        "/v1/chat/completions",
        json={"model": "tinyllama", "messages": CHAT, "max_tokens": 6},
        headers=headers,
    )
    conforms(await answer.json())
    stream = await gateway_v1.post(
        "/v1/completions",
        json={"prompt": "Hello", "max_tokens": 4, "stream": True},
        headers=headers,
    )
    lines = (await stream.text()).splitlines()
    chunks = [line.removeprefix("data: ") for line in lines if line.startswith("data: {")]
    assert chunks
    for chunk in chunks:
        conforms(json.loads(chunk))


@slow
async def test_stream_is_bare_data_lines_ending_in_done(gateway_v1, ready_worker, make_token):
    """On the wire: only ``data: <json>`` events (no ``event:`` line), the last ``data: [DONE]``."""
    response = await gateway_v1.post(
        "/v1/completions",
        json={"model": "tinyllama", "prompt": "Hello", "max_tokens": 4, "stream": True},
        headers={"Authorization": f"Bearer {make_token()}"},
    )
    assert response.headers["Content-Type"].startswith("text/event-stream")
    lines = [line.rstrip("\r\n") for line in (await response.text()).splitlines()]
    events = [line for line in lines if line and not line.startswith(":")]
    assert all(line.startswith("data: ") for line in events), events
    assert events[-1] == "data: [DONE]"
    assert response.headers["X-Job-Id"] in events[0]
