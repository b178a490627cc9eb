"""Python SDK for the TinyLlama Serve HTTP API: a sync ``Client`` and an ``AsyncClient``.

Both retry 429, 503 and connection errors (``clients.retry.RetryPolicy``), and send an
``Idempotency-Key`` on every submit, the same key on each retry of one call, so a retry
never makes a second job. Errors are ``ApiError`` with the problem's fields.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from clients.models import ApiError, Gpu, Job, UsageReport, problem_of
from clients.retry import RETRY_STATUSES, RetryPolicy, parse_retry_after

__all__ = ["ApiError", "AsyncClient", "Client", "Gpu", "Job", "RetryPolicy", "UsageReport"]

Token = str | Callable[[], str]
Event = tuple[str, dict[str, Any]]
SUBMIT_PATHS = ("/infer", "/v1/")


class SseParser:
    """Turns SSE lines into ``(event, data)`` pairs; ``[DONE]`` becomes ``("done", {})``."""

    def __init__(self) -> None:
        self.event = "message"

    def feed(self, line: str) -> Event | None:
        """One line in (without its newline); a pair out when a ``data:`` line completes one."""
        if line.startswith("event:"):
            self.event = line[6:].strip()
        elif line.startswith("data:"):
            raw, event = line[5:].strip(), self.event
            self.event = "message"
            if raw == "[DONE]":
                return "done", {}
            return event, json.loads(raw)
        elif not line:
            self.event = "message"
        return None


def chat_delta(data: dict[str, Any]) -> str:
    """The new text in one OpenAI chat-completion chunk ("" for role/finish chunks)."""
    if "error" in data:
        error = data["error"]
        raise ApiError(500, {"title": "generation failed", "detail": error.get("message", "")})
    choices = data.get("choices") or [{}]
    return choices[0].get("delta", {}).get("content") or ""


class _Base:
    """What both clients share: URL checks, headers, keys, the retry policy."""

    def __init__(
        self,
        base_url: str,
        token: Token,
        *,
        timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r}, token=***)"

    def _headers(self, method: str, path: str, extra: dict[str, str] | None) -> dict[str, str]:
        token = self._token() if callable(self._token) else self._token
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if method == "POST" and path.startswith(SUBMIT_PATHS):
            headers["Idempotency-Key"] = uuid.uuid4().hex  # one per logical call
        headers.update(extra or {})
        return headers

    def _wait(self, attempt: int, error: ApiError | None, header: str | None) -> float | None:
        retry_after = parse_retry_after(header)
        if retry_after is None and error is not None:
            retry_after = error.retry_after
        return self.retry.delay(attempt, retry_after=retry_after)


def _submit_body(prompt: str, options: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": prompt, **options}


def _chat_body(messages: list[dict[str, str]], options: dict[str, Any]) -> dict[str, Any]:
    return {"model": options.pop("model", "tinyllama"), "messages": messages, **options}


class Client(_Base):
    """``Client(base_url, token).generate("Hello")`` → the job with its result.

    ``token`` is a string, or a function returning one (called per request, so a stored
    login can refresh itself). The dict-returning methods are the original API; the
    typed ones (``submit``, ``get_job``, ``wait``, ``cancel_job``, ``gpu_status``,
    ``usage_report``) decode into ``clients.models`` Structs.
    """

    def __init__(self, base_url: str, token: Token, **kwargs: Any) -> None:
        self._sleep: Callable[[float], None] = kwargs.pop("sleep", time.sleep)
        super().__init__(base_url, token, **kwargs)

    def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        url = self.base_url + path  # http(s) only: checked in __init__
        data = json.dumps(body).encode() if body is not None else None
        sent = self._headers(method, path, headers)
        attempt = 0
        while True:
            request = urllib.request.Request(url, data=data, method=method, headers=sent)  # noqa: S310
            try:
                return urllib.request.urlopen(request, timeout=self.timeout_s)  # noqa: S310
            except urllib.error.HTTPError as exc:
                error = ApiError(exc.code, problem_of(exc.read()), url=url)
                header = exc.headers.get("Retry-After")
                wait = self._wait(attempt, error, header) if exc.code in RETRY_STATUSES else None
                if wait is None:
                    raise error from None
            except OSError:
                wait = self._wait(attempt, None, None)
                if wait is None:
                    raise
            self._sleep(wait)
            attempt += 1

    def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        with self._request(method, path, body) as response:
            return json.loads(response.read())

    def _typed(self, kind: type[Any], method: str, path: str, body: Any = None) -> Any:
        with self._request(method, path, body) as response:
            return msgspec.json.decode(response.read(), type=kind)

    def _events(self, path: str, body: dict[str, Any]) -> Iterator[Event]:
        response = self._request("POST", path, body, {"Accept": "text/event-stream"})
        with response:
            job_id = response.headers.get("X-Job-Id")
            if job_id:
                yield "job", {"id": job_id}
            parser = SseParser()
            for raw in response:
                item = parser.feed(raw.decode().rstrip("\r\n"))
                if item is not None:
                    yield item
                    if item[0] in ("done", "error"):
                        return

    # The original, dict-returning API (the desktop app uses it).
    def generate(
        self, prompt: str, *, mode: str = "wait", idempotency_key: str | None = None, **options: Any
    ) -> dict[str, Any]:
        """Submit a prompt; ``wait`` returns the finished job (or 202's pending one)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        body = _submit_body(prompt, options)
        with self._request("POST", f"/infer?mode={mode}", body, headers) as response:
            return json.loads(response.read())

    def stream(self, prompt: str, **options: Any) -> Iterator[Event]:
        """Yield ``("job", {"id"})``, ``token``/``status`` events, then ``done`` or ``error``."""
        return self._events("/infer?mode=stream", _submit_body(prompt, options))

    def job(self, job_id: str) -> dict[str, Any]:
        """A job's status and result."""
        return self._json("GET", f"/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job."""
        return self._json("DELETE", f"/jobs/{job_id}")

    def gpu(self) -> dict[str, Any]:
        """The GPU fleet: state, workers, price, time left before the idle stop."""
        return self._json("GET", "/gpu")

    def gpu_start(self) -> dict[str, Any]:
        """Operator: start the fleet (admin scope)."""
        return self._json("POST", "/gpu/start")

    def gpu_stop(self) -> dict[str, Any]:
        """Operator: drain and stop the fleet (admin scope)."""
        return self._json("POST", "/gpu/stop")

    def usage(self) -> dict[str, Any]:
        """Your usage and the budget (everyone's, with the admin scope)."""
        return self._json("GET", "/usage")

    # The typed API.
    def submit(self, prompt: str, *, mode: str = "async", **options: Any) -> Job:
        """Submit a prompt; ``async`` returns at once with a job to ``wait`` for."""
        return self._typed(Job, "POST", f"/infer?mode={mode}", _submit_body(prompt, options))

    def get_job(self, job_id: str) -> Job:
        """A job's status and, once done, its result."""
        return self._typed(Job, "GET", f"/jobs/{job_id}")

    def wait(self, job_id: str, *, interval_s: float = 0.5, timeout_s: float = 600.0) -> Job:
        """Poll a job until it ends (or ``timeout_s`` passes: then its latest state)."""
        deadline = time.monotonic() + timeout_s
        job = self.get_job(job_id)
        while not job.done and time.monotonic() < deadline:
            self._sleep(interval_s)
            job = self.get_job(job_id)
        return job

    def cancel_job(self, job_id: str) -> Job:
        """Cancel a job: a queued one never runs, a running one stops at its next token."""
        return self._typed(Job, "DELETE", f"/jobs/{job_id}")

    def gpu_status(self) -> Gpu:
        """The GPU fleet's state."""
        return self._typed(Gpu, "GET", "/gpu")

    def usage_report(self) -> UsageReport:
        """Your usage and the budget."""
        return self._typed(UsageReport, "GET", "/usage")

    def chat(self, messages: list[dict[str, str]], **options: Any) -> Iterator[str]:
        """Stream the assistant's reply to a conversation (``/v1/chat/completions``)."""
        body = _chat_body(messages, {**options, "stream": True})
        for event, data in self._events("/v1/chat/completions", body):
            if event == "message":
                yield chat_delta(data)


from clients.async_sdk import AsyncClient  # noqa: E402  (it builds on the helpers above)
