"""Cost controller: poll ``/usage`` (every 30 s by default) into the state."""

from __future__ import annotations

from clients.desktop.bridge import Bridge
from clients.desktop.controllers.errors import describe
from clients.desktop.state import AppState

POLL_MS = 30_000


class CostController:
    """Keeps ``state.usage`` fresh; a failed poll leaves the last figures and says why."""

    def __init__(self, state: AppState, bridge: Bridge, client_of, *, poll_ms: int = POLL_MS):
        self._state = state
        self._bridge = bridge
        self._client_of = client_of
        self.poll_ms = poll_ms
        self._in_flight = False

    def refresh(self) -> None:
        """Ask ``GET /usage`` once."""
        client = self._client_of()
        if client is None or self._in_flight:
            return
        self._in_flight = True
        self._bridge.run(client.usage, done=self._got, failed=self._failed)

    def _got(self, usage: dict) -> None:
        self._in_flight = False
        self._state.usage, self._state.cost_note = usage, ""
        self._state.changed()

    def _failed(self, exc: Exception) -> None:
        self._in_flight = False
        self._state.cost_note = describe(exc)
        self._state.changed()
