"""A real instruct model through the whole stack: SmolLM2-135M-Instruct, offline, on the CPU.

Gateway over HTTP → Redis queue → a worker process started with
``TINYLLAMA_MODEL=smollm2`` (the offline default) → a right answer, greedy and
through the chat template, on the native and the OpenAI route.
"""

from __future__ import annotations

import pytest

from services.worker.gguf_source import SMOLLM2_NAME

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France? Answer briefly."


@pytest.fixture(scope="module")
def worker(worker_factory, smollm2_model_path):
    """One real worker process on ``smollm2``, converted beforehand into the test cache."""
    # 256 tokens per slot (32 slots), 380 MB of float32 cache: room for these short chats.
    return worker_factory(TINYLLAMA_MODEL="smollm2", TINYLLAMA_CACHE_TOKENS="8192")


@pytest.fixture
async def headers(worker, redis, make_token) -> dict[str, str]:
    """A user's bearer header, once the module's worker has said it is ready."""
    await worker.ready(redis)
    return {"Authorization": f"Bearer {make_token()}"}


async def test_infer_with_the_chat_template_answers_the_question(gateway, headers):
    """/infer with ``chat: true``, greedy: "Paris", from a model named SmolLM2-135M-Instruct."""
    response = await gateway.post(
        "/infer",
        json={"prompt": QUESTION, "chat": True, "temperature": 0, "max_new_tokens": 32},
        headers=headers,
    )
    assert response.status == 200, await response.text()
    result = (await response.json())["result"]
    assert "Paris" in result["text"], result
    assert result["model"] == SMOLLM2_NAME
    assert result["finish_reason"] == "stop", result  # it ends its turn by itself


async def test_chat_completions_answer_the_question(gateway, headers):
    """/v1/chat/completions with the question as a user message, temperature 0: "Paris"."""
    response = await gateway.post(
        "/v1/chat/completions",
        json={
            "model": SMOLLM2_NAME,
            "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 32,
            "temperature": 0,
        },
        headers=headers,
    )
    assert response.status == 200, await response.text()
    body = await response.json()
    assert "Paris" in body["choices"][0]["message"]["content"], body
    assert body["model"] == SMOLLM2_NAME


async def test_ready_and_models_name_the_real_model(gateway, headers):
    """/ready and /v1/models say SmolLM2-135M-Instruct, and that it is not the demo model."""
    ready = await (await gateway.get("/ready")).json()
    assert ready["model"] == SMOLLM2_NAME
    assert ready["workers"][0]["demo_model"] is False
    models = await (await gateway.get("/v1/models", headers=headers)).json()
    assert SMOLLM2_NAME in [m["id"] for m in models["data"]]
