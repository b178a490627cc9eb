"""Cost controller: poll ``/usage`` (every 30 s by default) into the state."""

from __future__ import annotations

from clients.desktop.bridge import Bridge
from clients.desktop.controllers.errors import describe
from clients.desktop.controllers.polling import Poller
from clients.desktop.state import AppState
from clients.sdk import Client

POLL_MS = 30_000


class CostController:
    """Keeps ``state.usage`` fresh; a failed poll leaves the last figures and says why."""

    def __init__(self, state: AppState, bridge: Bridge, client_of, *, poll_ms: int = POLL_MS):
        self._state = state
        self.poll_ms = poll_ms
        self._poller = Poller(bridge, client_of, Client.usage, done=self._got, failed=self._failed)
        self.refresh = self._poller.refresh

    def _got(self, usage: dict) -> None:
        self._state.usage, self._state.cost_note = usage, ""
        self._state.changed()

    def _failed(self, exc: Exception) -> None:
        self._state.cost_note = describe(exc)
        self._state.changed()
