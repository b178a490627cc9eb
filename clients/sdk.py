"""A small, dependency-free Python client for the TinyLlama Serve HTTP API."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any


class ApiError(Exception):
    """The server answered with a problem+json error (or something unreadable)."""

    def __init__(self, status: int, problem: dict[str, Any], *, url: str = "") -> None:
        self.status = status
        self.problem = problem
        self.url = url
        detail = problem.get("detail") or problem.get("title") or "request failed"
        super().__init__(
            f"HTTP {status} from {url}: {detail}" if url else f"HTTP {status}: {detail}"
        )


class Client:
    """``Client(base_url, token).generate("Hello")`` → the job with its result."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 120.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"Client({self.base_url!r}, token=***)"

    def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        url = self.base_url + path  # http(s) only: checked in __init__
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
        request.add_header("Authorization", f"Bearer {self._token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            # The scheme was checked in __init__: http(s) only.
            return urllib.request.urlopen(request, timeout=self.timeout_s)  # noqa: S310
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                problem = json.loads(raw)
            except ValueError:
                problem = {"detail": raw.decode(errors="replace")[:200]}
            raise ApiError(exc.code, problem, url=url) from None

    def generate(
        self, prompt: str, *, mode: str = "wait", idempotency_key: str | None = None, **options: Any
    ) -> dict[str, Any]:
        """Submit a prompt; ``wait`` returns the finished job (or 202's pending one)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        with self._request(
            "POST", f"/infer?mode={mode}", {"prompt": prompt, **options}, headers
        ) as response:
            return json.loads(response.read())

    def stream(self, prompt: str, **options: Any) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield ``(event, data)`` pairs: ``job`` (its ``id``) first, then ``token`` deltas,
        ``status`` changes, and one ``done`` or ``error``."""
        response = self._request(
            "POST",
            "/infer?mode=stream",
            {"prompt": prompt, **options},
            {"Accept": "text/event-stream"},
        )
        with response:
            yield "job", {"id": response.headers.get("X-Job-Id", "")}
            event = "message"
            for raw in response:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    yield event, json.loads(line[5:].strip())
                    if event in ("done", "error"):
                        return
                elif not line:
                    event = "message"

    def job(self, job_id: str) -> dict[str, Any]:
        """A job's status and result."""
        with self._request("GET", f"/jobs/{job_id}") as response:
            return json.loads(response.read())

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job."""
        with self._request("DELETE", f"/jobs/{job_id}") as response:
            return json.loads(response.read())

    def _json(self, method: str, path: str) -> dict[str, Any]:
        with self._request(method, path) as response:
            return json.loads(response.read())

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
