"""The whole path: token → gateway over HTTP → Redis queue → real worker process → answer."""

from __future__ import annotations

import asyncio

import pytest

from tests.support import read_sse

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def worker(worker_factory):
    """One real worker process serving the demo model for this module."""
    return worker_factory()


@pytest.fixture
async def ready_worker(worker, redis):
    """The module's worker, after it has said it is ready."""
    await worker.ready(redis)
    return worker


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_prompt_gets_generated_text_and_token_counts(gateway, ready_worker, make_token):
    """An authenticated prompt comes back 200 with text, usage and timings from the demo model."""
    response = await gateway.post(
        "/infer",
        json={"prompt": "Hello, llama!", "max_new_tokens": 12},
        headers=_auth(make_token()),
    )
    assert response.status == 200, await response.text()
    job = await response.json()
    assert job["status"] == "succeeded"
    result = job["result"]
    assert result["model"] == "tinyllama-demo"
    assert result["usage"]["prompt_tokens"] > 0
    assert 1 <= result["usage"]["completion_tokens"] <= 12
    assert result["usage"]["total_tokens"] == (
        result["usage"]["prompt_tokens"] + result["usage"]["completion_tokens"]
    )
    assert isinstance(result["text"], str)
    assert result["finish_reason"] in ("length", "stop")
    assert response.headers["Location"] == f"/jobs/{job['id']}"


async def test_ready_reports_the_served_model(gateway, ready_worker):
    """/ready is 200 and names the model once a worker has a warm model."""
    response = await gateway.get("/ready")
    assert response.status == 200
    body = await response.json()
    assert body["model"] == "tinyllama-demo"
    assert body["workers"][0]["demo_model"] is True


async def test_greedy_answers_are_deterministic(gateway, ready_worker, make_token):
    """The same greedy prompt twice gives the same text (exact, not flaky)."""
    texts = []
    for _ in range(2):
        response = await gateway.post(
            "/infer",
            json={"prompt": "queue worker", "max_new_tokens": 8},
            headers=_auth(make_token()),
        )
        texts.append((await response.json())["result"]["text"])
    assert texts[0] == texts[1]


async def test_a_seeded_sampled_request_gives_the_same_text_alone_and_in_a_busy_batch(
    gateway, ready_worker, make_token
):
    """``seed`` through the stack: the same text alone and among 6 others; another seed differs."""
    headers = _auth(make_token())

    async def ask(prompt: str, seed: int) -> str:
        body = {"prompt": prompt, "max_new_tokens": 16, "temperature": 1.0, "seed": seed}
        response = await gateway.post("/infer", json=body, headers=headers)
        assert response.status == 200, await response.text()
        return (await response.json())["result"]["text"]

    alone = await ask("seeded words", 1234)
    busy = await asyncio.gather(
        ask("seeded words", 1234), *(ask(f"neighbour {i}", i) for i in range(6))
    )
    others = [await ask("seeded words", seed) for seed in (1, 2, 3)]
    assert busy[0] == alone
    assert any(text != alone for text in others)  # the seed, not the prompt, fixed the text


async def test_async_mode_then_poll(gateway, ready_worker, make_token):
    """mode=async answers 202 + Location at once; polling the job URL yields the result."""
    headers = _auth(make_token())
    response = await gateway.post(
        "/infer?mode=async", json={"prompt": "hi", "max_new_tokens": 4}, headers=headers
    )
    assert response.status == 202
    url = response.headers["Location"]
    for _ in range(600):  # up to 30 s on a slow machine
        job = await (await gateway.get(url, headers=headers)).json()
        if job["status"] == "succeeded":
            break
        await asyncio.sleep(0.05)
    assert job["status"] == "succeeded"
    assert job["result"]["usage"]["completion_tokens"] >= 1


async def test_other_subjects_cannot_see_a_job(gateway, ready_worker, make_token):
    """A job is visible to its owner only; others get 404 (not 403: no existence leak)."""
    response = await gateway.post(
        "/infer?mode=async", json={"prompt": "secret"}, headers=_auth(make_token("alice"))
    )
    url = response.headers["Location"]
    other = await gateway.get(url, headers=_auth(make_token("mallory")))
    assert other.status == 404


async def test_stream_mode_sends_deltas_then_done(gateway, ready_worker, make_token):
    """mode=stream is SSE: token deltas whose concatenation is the final text, then done."""
    response = await gateway.post(
        "/infer?mode=stream",
        json={"prompt": "Hello world", "max_new_tokens": 10},
        headers=_auth(make_token()),
    )
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = await read_sse(response)
    names = [e for e, _ in events]
    assert names[-1] == "done"
    streamed = "".join(d["text"] for e, d in events if e == "token")
    assert streamed == events[-1][1]["text"]


async def test_cancel_a_running_job(gateway, ready_worker, make_token):
    """DELETE /jobs/{id} stops a long generation early and reports it cancelled."""
    headers = _auth(make_token())
    response = await gateway.post(
        "/infer?mode=async",
        json={"prompt": "long", "max_new_tokens": 2000, "temperature": 1.0},
        headers=headers,
    )
    url = response.headers["Location"]
    for _ in range(1500):  # up to 30 s on a slow machine
        if (await (await gateway.get(url, headers=headers)).json())["status"] == "running":
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("the job never started running")
    cancelled = await gateway.delete(url, headers=headers)
    assert cancelled.status == 200
    job = await cancelled.json()
    assert job["status"] == "cancelled", job
    assert "result" in job, job.get("error")
    usage = job["result"]["usage"]
    assert usage["completion_tokens"] < 2000
    assert usage["prompt_tokens"] > 0  # the prompt was run: it counts


async def test_a_cancelled_job_counts_in_usage(gateway, ready_worker, make_token):
    """A job cancelled mid-generation used the GPU: /usage counts its job and its tokens."""
    headers = _auth(make_token("metered"))
    response = await gateway.post(
        "/infer?mode=stream",
        json={"prompt": "long", "max_new_tokens": 2000, "temperature": 1.0},
        headers=headers,
    )
    job_id = response.headers["X-Job-Id"]
    async for raw in response.content:
        if raw.startswith(b"event: token"):
            break
    cancelled = await (await gateway.delete(f"/jobs/{job_id}", headers=headers)).json()
    assert cancelled["status"] == "cancelled"
    response.close()
    used = cancelled["result"]["usage"]
    month: dict = {}
    for _ in range(100):  # the usage record follows the result by a moment
        month = (await (await gateway.get("/usage", headers=headers)).json())["month"]
        if month["jobs"]:
            break
        await asyncio.sleep(0.05)
    assert month["jobs"] == 1
    assert month["prompt_tokens"] == used["prompt_tokens"] > 0
    assert month["completion_tokens"] == used["completion_tokens"] > 0


async def test_stream_client_that_disconnects_cancels_its_job(gateway, ready_worker, make_token):
    """Closing an SSE stream mid-generation cancels the job: it stops using the GPU."""
    headers = _auth(make_token("leaver"))
    response = await gateway.post(
        "/infer?mode=stream", json={"prompt": "go on", "max_new_tokens": 2000}, headers=headers
    )
    job_url = f"/jobs/{response.headers['X-Job-Id']}"
    async for raw in response.content:
        if raw.startswith(b"event: token"):
            break
    response.close()
    for _ in range(600):  # up to 30 s on a slow machine
        job = await (await gateway.get(job_url, headers=headers)).json()
        if job["status"] == "cancelled":
            break
        await asyncio.sleep(0.05)
    assert job["status"] == "cancelled"
    assert job["result"]["usage"]["completion_tokens"] < 2000
