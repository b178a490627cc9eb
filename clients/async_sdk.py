"""``AsyncClient``: the SDK on aiohttp, with the sync client's retries, keys and types."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec

from clients.models import ApiError, Gpu, Job, UsageReport, problem_of
from clients.retry import RETRY_STATUSES
from clients.sdk import Event, SseParser, _Base, _chat_body, _submit_body, chat_delta


class AsyncClient(_Base):
    """``async with AsyncClient(url, token) as c: job = await c.submit("Hi")``."""

    def __init__(self, base_url: str, token: Any, **kwargs: Any) -> None:
        super().__init__(base_url, token, **kwargs)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        url = self.base_url + path
        data = json.dumps(body).encode() if body is not None else None
        sent = self._headers(method, path, headers)
        attempt = 0
        while True:
            try:
                response = await self._http().request(method, url, data=data, headers=sent)
            except aiohttp.ClientConnectionError:
                wait = self._wait(attempt, None, None)
                if wait is None:
                    raise
            else:
                if response.status < 400:
                    return response
                error = ApiError(response.status, problem_of(await response.read()), url=url)
                header = response.headers.get("Retry-After")
                response.release()
                retryable = response.status in RETRY_STATUSES
                wait = self._wait(attempt, error, header) if retryable else None
                if wait is None:
                    raise error
            await asyncio.sleep(wait)
            attempt += 1

    async def _typed(self, kind: type[Any], method: str, path: str, body: Any = None) -> Any:
        response = await self._request(method, path, body)
        async with response:
            return msgspec.json.decode(await response.read(), type=kind)

    async def _events(self, path: str, body: dict[str, Any]) -> AsyncIterator[Event]:
        response = await self._request("POST", path, body, {"Accept": "text/event-stream"})
        async with response:
            job_id = response.headers.get("X-Job-Id")
            if job_id:
                yield "job", {"id": job_id}
            parser = SseParser()
            async for raw in response.content:
                item = parser.feed(raw.decode().rstrip("\r\n"))
                if item is not None:
                    yield item
                    if item[0] in ("done", "error"):
                        return

    async def submit(self, prompt: str, *, mode: str = "async", **options: Any) -> Job:
        """Submit a prompt; ``async`` returns at once with a job to ``wait`` for."""
        return await self._typed(Job, "POST", f"/infer?mode={mode}", _submit_body(prompt, options))

    def stream(self, prompt: str, **options: Any) -> AsyncIterator[Event]:
        """``("job", {"id"})``, then ``token``/``status`` events, then ``done`` or ``error``."""
        return self._events("/infer?mode=stream", _submit_body(prompt, options))

    async def get_job(self, job_id: str) -> Job:
        """A job's status and, once done, its result."""
        return await self._typed(Job, "GET", f"/jobs/{job_id}")

    async def wait(self, job_id: str, *, interval_s: float = 0.5, timeout_s: float = 600.0) -> Job:
        """Poll a job until it ends (or ``timeout_s`` passes: then its latest state)."""
        deadline = time.monotonic() + timeout_s
        job = await self.get_job(job_id)
        while not job.done and time.monotonic() < deadline:
            await asyncio.sleep(interval_s)
            job = await self.get_job(job_id)
        return job

    async def cancel_job(self, job_id: str) -> Job:
        """Cancel a job."""
        return await self._typed(Job, "DELETE", f"/jobs/{job_id}")

    async def gpu_status(self) -> Gpu:
        """The GPU fleet's state."""
        return await self._typed(Gpu, "GET", "/gpu")

    async def usage_report(self) -> UsageReport:
        """Your usage and the budget."""
        return await self._typed(UsageReport, "GET", "/usage")

    async def chat(self, messages: list[dict[str, str]], **options: Any) -> AsyncIterator[str]:
        """Stream the assistant's reply to a conversation (``/v1/chat/completions``)."""
        body = _chat_body(messages, {**options, "stream": True})
        async for event, data in self._events("/v1/chat/completions", body):
            if event == "message":
                yield chat_delta(data)
