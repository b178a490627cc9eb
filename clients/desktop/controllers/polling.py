"""One GET at a time, on a timer: the GPU and cost panels' shared refresh."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clients.desktop.bridge import Bridge
from clients.sdk import Client


class Poller:
    """``refresh()`` runs ``call(client)`` off the Tk thread unless one is still in flight."""

    def __init__(
        self,
        bridge: Bridge,
        client_of: Callable[[], Client | None],
        call: Callable[[Client], dict[str, Any]],
        *,
        done: Callable[[dict[str, Any]], None],
        failed: Callable[[Exception], None],
    ) -> None:
        self._bridge = bridge
        self._client_of = client_of  # None: the backend has no such API (the panel greys out)
        self._call = call
        self._done = done
        self._failed = failed
        self._in_flight = False

    def refresh(self) -> None:
        """Ask once (skipped when a request is in flight or there is no service backend)."""
        client = self._client_of()
        if client is None or self._in_flight:
            return
        self._in_flight = True
        self._bridge.run(lambda: self._call(client), done=self._got, failed=self._lost)

    def _got(self, body: dict[str, Any]) -> None:
        self._in_flight = False
        self._done(body)

    def _lost(self, exc: Exception) -> None:
        self._in_flight = False
        self._failed(exc)
