"""Prompt controller: send, stream the answer into the state, stop."""

from __future__ import annotations

import threading

from clients.desktop.bridge import Bridge
from clients.desktop.controllers.errors import describe
from clients.desktop.state import AppState, Exchange


class PromptController:
    """One prompt at a time; its tokens are appended to the last exchange as they arrive."""

    def __init__(self, state: AppState, bridge: Bridge, backend_of) -> None:
        self._state = state
        self._bridge = bridge
        self._backend_of = backend_of  # () -> Backend: the one selected now
        self._stop = threading.Event()

    def send(self, prompt: str) -> None:
        """Start streaming ``prompt``'s answer (ignored while one is streaming)."""
        prompt = prompt.strip()
        if not prompt or self._state.streaming:
            return
        exchange = Exchange(prompt=prompt)
        self._state.history.append(exchange)
        self._state.streaming, self._state.job_id = True, ""
        self._stop = threading.Event()
        self._state.changed()
        backend, stop, idle = self._backend_of(), self._stop, self._state.idle_minutes

        def work() -> None:
            events = backend.stream(prompt, idle_minutes=idle)
            try:
                for event, value in events:
                    self._bridge.deliver(lambda e=event, v=value: self._on_event(exchange, e, v))
                    if stop.is_set():
                        break
            finally:
                events.close()  # closing the HTTP stream also cancels the job server-side

        self._bridge.run(
            work,
            done=lambda _: self._finish(exchange),
            failed=lambda exc: self._fail(exchange, exc),
        )

    def _on_event(self, exchange: Exchange, event: str, value: str) -> None:
        if event == "job":
            self._state.job_id = value
        elif event == "token":
            exchange.answer += value
        elif event == "error":
            exchange.error = value
        self._state.changed()

    def _finish(self, exchange: Exchange) -> None:
        exchange.done = True
        self._state.streaming, self._state.job_id = False, ""
        self._state.changed()

    def _fail(self, exchange: Exchange, exc: Exception) -> None:
        exchange.error = describe(exc)
        self._finish(exchange)

    def stop(self) -> None:
        """Stop the answer: cancel the job when its id is known, and close the stream."""
        if not self._state.streaming:
            return
        self._stop.set()
        job_id, backend = self._state.job_id, self._backend_of()
        if job_id:
            self._bridge.run(lambda: backend.cancel(job_id), done=lambda _: None, failed=self._note)

    def _note(self, exc: Exception) -> None:
        if self._state.history:
            self._state.history[-1].error = describe(exc)
        self._state.changed()
