"""Context limits at the door: what cannot fit the served model is refused before queueing.

The gateway learns the model's context (and its longest token) from worker heartbeats,
written here the way a worker writes them; both route families are driven over a real
socket: ``/v1`` with the official ``openai`` client (400 ``context_length_exceeded``
naming ``param``), ``/infer`` with raw HTTP (422 naming the field path).
"""

from __future__ import annotations

import openai
import pytest

from services.gateway.jobs.fits import (
    ContextTooLong,
    check_fits,
    counted_chars,
    prompt_tokens_at_least,
)
from services.protocol import names
from services.protocol.heartbeats import withdraw
from tests.test_openai_compat import CHAT, heartbeat, sdk

CONTEXT = 2048


@pytest.fixture
async def client(gateway, make_token):
    """The official async client on the gateway (``conftest.gateway``), no retries."""
    async with sdk(gateway, make_token()) as client:
        yield client


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _queued(redis) -> int:
    return await redis.zcard(names.QUEUE_NAME)


# ---------------------------------------------------------------------- over the socket


async def test_infer_max_new_tokens_past_the_context_is_a_422_stating_both_numbers(
    gateway, make_token, redis
):
    """``max_new_tokens: 4096`` against a 2048-token model: 422 at ``$.max_new_tokens``, the
    message naming 4096 and 2048, and nothing queued (it used to fail inside the worker)."""
    await heartbeat(redis, context_length=CONTEXT, max_token_chars=16)
    response = await gateway.post(
        "/infer?mode=async",
        json={"prompt": "Hi", "max_new_tokens": 4096},
        headers=_auth(make_token()),
    )
    assert response.status == 422
    problem = await response.json()
    assert problem["type"].endswith("/context-length-exceeded")
    assert problem["errors"][0]["path"] == "$.max_new_tokens"
    assert "4096" in problem["detail"]
    assert "2048" in problem["detail"]
    assert await _queued(redis) == 0


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_v1_limit_past_the_context_is_400_context_length_exceeded(client, redis, field):
    """The SDK's BadRequestError, code ``context_length_exceeded``, ``param`` the limit sent."""
    await heartbeat(redis, context_length=CONTEXT, max_token_chars=16)
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="tinyllama", messages=CHAT, **{field: 4096})
    error = caught.value
    assert (error.code, error.param, error.type) == (
        "context_length_exceeded",
        field,
        "invalid_request_error",
    )
    assert "4096" in error.message
    assert "2048" in error.message
    assert await _queued(redis) == 0


async def test_a_prompt_that_cannot_fit_is_refused_naming_the_prompt(
    client, gateway, make_token, redis
):
    """12 000 characters with tokens of at most 8 need 1500 tokens: past a 1024 context with
    any max_tokens, so ``messages`` (or ``$.prompt``) is named."""
    await heartbeat(redis, context_length=1024, max_token_chars=8)
    long = "word " * 3000
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model="tinyllama", messages=[{"role": "user", "content": long}], max_tokens=16
        )
    assert (caught.value.code, caught.value.param) == ("context_length_exceeded", "messages")
    assert "at least 1500 tokens" in caught.value.message
    response = await gateway.post(
        "/infer?mode=async",
        json={"prompt": long, "max_new_tokens": 16},
        headers=_auth(make_token()),
    )
    assert (await response.json())["errors"][0]["path"] == "$.prompt"


async def test_what_may_fit_is_queued_for_the_worker_to_judge(gateway, make_token, redis):
    """At the bound exactly (1000 characters / 8 = 125 tokens + 899 = 1024) it is queued."""
    await heartbeat(redis, context_length=1024, max_token_chars=8)
    response = await gateway.post(
        "/infer?mode=async",
        json={"prompt": "x" * 1000, "max_new_tokens": 899},
        headers=_auth(make_token()),
    )
    assert response.status == 202, await response.text()
    refused = await gateway.post(
        "/infer?mode=async",
        json={"prompt": "x" * 1000, "max_new_tokens": 900},
        headers=_auth(make_token()),
    )
    assert refused.status == 422


async def test_scaled_to_zero_the_same_request_is_refused(client, redis):
    """With no live worker the context the workers reported last still applies: a client
    gets the same answer whether the fleet is warm or stopped (and starts no GPU for it)."""
    await heartbeat(redis, context_length=CONTEXT, max_token_chars=16)
    await client.models.list()  # the gateway sees the worker once
    await withdraw(redis, worker_id="w1")
    with pytest.raises(openai.BadRequestError) as caught:
        await client.completions.create(model="tinyllama", prompt="Hi", max_tokens=4096)
    assert caught.value.code == "context_length_exceeded"


async def test_a_worker_that_does_not_say_its_context_leaves_the_check_to_itself(
    gateway, make_token, redis
):
    """An older worker (no ``context_length`` in its heartbeat): the request is queued."""
    await heartbeat(redis)
    response = await gateway.post(
        "/infer?mode=async",
        json={"prompt": "Hi", "max_new_tokens": 4096},
        headers=_auth(make_token()),
    )
    assert response.status == 202


# ------------------------------------------------------------------------ the rule itself


def test_whitespace_controls_and_combining_marks_are_not_counted():
    """A normalizer may drop or merge them: only what every tokenizer must cover counts."""
    assert counted_chars(["a b\tc\n"]) == 3
    assert counted_chars(["e\u0301"]) == 1  # e + combining acute: é, one character
    assert counted_chars(["\ufb03"]) == 1  # the ffi ligature: one under NFC, three under NFKC
    assert counted_chars(["\u1100\u1161\u11a8"]) == 1  # Hangul jamo compose to one syllable
    assert counted_chars(["ab", "cd"]) == 4


def test_the_prompt_bound_rounds_up():
    """17 characters with tokens of at most 8 need at least 3 tokens."""
    assert prompt_tokens_at_least(["x" * 17], max_token_chars=8) == 3
    assert prompt_tokens_at_least(["   "], max_token_chars=8) == 0


@pytest.mark.parametrize(
    ("max_new", "prompt", "path"),
    [(2048, "x", "$.max_tokens"), (2000, "x" * 800, "$.messages")],
)
def test_the_field_named_is_the_one_to_change(max_new, prompt, path):
    """``max_tokens`` when it alone fills the context, else the prompt."""
    with pytest.raises(ContextTooLong) as caught:
        check_fits(
            [prompt],
            max_new_tokens=max_new,
            context_length=2048,
            max_token_chars=16,
            model="m",
            prompt_path="$.messages",
            limit_path="$.max_tokens",
        )
    assert caught.value.path == path


def test_without_the_longest_token_only_max_new_tokens_is_checked():
    """An unknown token length bounds the prompt by nothing: a huge prompt passes."""
    check_fits(
        ["x" * 30_000],
        max_new_tokens=2047,
        context_length=2048,
        max_token_chars=None,
        model="m",
        prompt_path="$.prompt",
        limit_path="$.max_new_tokens",
    )


@pytest.mark.slow
async def test_the_workers_own_refusal_states_the_number_the_client_sent(
    gateway, worker_factory, make_token, redis
):
    """Past the door (the bound proves ~580 of ~1500 prompt tokens) the worker's exact count
    refuses it, and its message states what the client asked for as well as its own cap."""
    worker = worker_factory(TINYLLAMA_MAX_NEW_TOKENS="600")
    await worker.ready(redis)
    response = await gateway.post(
        "/infer",
        json={"prompt": "hello " * 1500, "max_new_tokens": 1000},
        headers=_auth(make_token()),
    )
    job = await response.json()
    assert (job["status"], job["error"]["code"]) == ("failed", "request_too_large")
    message = job["error"]["message"]
    assert "the request asked for 1000; this worker caps it at 600" in message
    assert "context of 2048 tokens" in message, message
