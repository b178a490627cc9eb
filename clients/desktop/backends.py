"""The backends a prompt can go to: this service (SDK) or any OpenAI-compatible endpoint.

Both yield the same events: ``("job", id)``, ``("token", text)``, ``("done", "")``,
``("error", message)``. They block: run them through the ``Bridge``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from clients.sdk import ApiError, Client


class Backend(Protocol):
    """A place prompts go to."""

    name: str
    has_service_panels: bool

    def stream(self, prompt: str, *, idle_minutes: int) -> Iterator[tuple[str, str]]:
        """The answer as events, token by token."""
        ...

    def cancel(self, job_id: str) -> None:
        """Stop a running job (best effort)."""
        ...


class ServiceBackend:
    """This service's own ``/infer`` API through the SDK; also GPU and usage."""

    name = "service"
    has_service_panels = True

    def __init__(self, client: Client) -> None:
        self.client = client

    def stream(self, prompt: str, *, idle_minutes: int) -> Iterator[tuple[str, str]]:
        """SDK events, normalised; the job id from a ``job`` event or a ``status`` one."""
        seen_job = False
        # A desktop prompt is a chat turn: the model's chat template, room for an answer.
        answer = self.client.stream(prompt, idle=idle_minutes, chat=True, max_new_tokens=256)
        for event, data in answer:
            job_id = data.get("id") or data.get("job_id") or ""
            if job_id and not seen_job and event in ("job", "status"):
                seen_job = True
                yield "job", str(job_id)
            if event == "token":
                yield "token", str(data.get("text", ""))
            elif event == "done":
                yield "done", ""
            elif event == "error":
                yield "error", str(data.get("message") or data.get("code") or "failed")

    def cancel(self, job_id: str) -> None:
        """``DELETE /jobs/{id}``; a job already finished is not an error here."""
        try:
            self.client.cancel(job_id)
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise


class OpenAIBackend:
    """Streaming chat completions on any OpenAI-compatible endpoint (``openai`` package)."""

    name = "openai"
    has_service_panels = False

    def __init__(self, base_url: str, api_key: str, *, model: str) -> None:
        import openai

        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
        self._model = model

    def __repr__(self) -> str:
        return f"OpenAIBackend({self._client.base_url!s}, api_key=***)"

    def stream(self, prompt: str, *, idle_minutes: int) -> Iterator[tuple[str, str]]:
        """Chat-completion deltas as ``token`` events (``idle_minutes`` does not apply)."""
        import openai

        try:
            chunks = self._client.chat.completions.create(
                model=self._model, messages=[{"role": "user", "content": prompt}], stream=True
            )
            with chunks:
                for chunk in chunks:
                    for choice in chunk.choices:
                        if choice.delta and choice.delta.content:
                            yield "token", choice.delta.content
        except openai.OpenAIError as exc:
            cause = f" ({type(exc.__cause__).__name__}: {exc.__cause__})" if exc.__cause__ else ""
            yield "error", f"{exc}{cause}"
            return
        yield "done", ""

    def cancel(self, job_id: str) -> None:
        """Nothing to cancel server-side: closing the stream ends it."""
