"""GPU controller: poll the fleet, start and stop it (admins), pick the idle minutes."""

from __future__ import annotations

from clients.desktop.bridge import Bridge
from clients.desktop.config import clamp_idle
from clients.desktop.controllers.errors import describe
from clients.desktop.controllers.polling import Poller
from clients.desktop.state import AppState
from clients.sdk import ApiError, Client

POLL_MS = 2000


class GpuController:
    """Keeps ``state.gpu`` fresh; Start/Stop go through the SDK."""

    def __init__(self, state: AppState, bridge: Bridge, client_of, *, poll_ms: int = POLL_MS):
        self._state = state
        self._bridge = bridge
        self._client_of = client_of  # () -> sdk.Client | None (None: backend without a GPU)
        self.poll_ms = poll_ms
        self._poller = Poller(bridge, client_of, Client.gpu, done=self._got, failed=self._failed)
        self.refresh = self._poller.refresh

    def _got(self, gpu: dict) -> None:
        self._state.gpu = gpu
        if gpu.get("state") == "stopped" and self._state.gpu_note.startswith("stopping"):
            self._state.gpu_note = "stopped: the GPU is off"
        self._state.changed()

    def _failed(self, exc: Exception) -> None:
        self._state.gpu_note = describe(exc)
        self._state.changed()

    def _command(self, call_name: str, note: str) -> None:
        client = self._client_of()
        if client is None or not self._state.is_admin:
            return
        self._state.gpu_note = note
        self._state.changed()
        self._bridge.run(getattr(client, call_name), done=self._got, failed=self._refused)

    def _refused(self, exc: Exception) -> None:
        if isinstance(exc, ApiError) and exc.status == 403:
            self._state.is_admin = False
            self._state.gpu_controls_reason = "Start/Stop need the admin scope (server said 403)"
        self._failed(exc)

    def start(self) -> None:
        """Operator: ``POST /gpu/start``."""
        self._command("gpu_start", "starting: asked the fleet to start")

    def stop(self) -> None:
        """Operator: ``POST /gpu/stop``; the panel says so once the fleet reads ``stopped``."""
        self._command("gpu_stop", "stopping: draining jobs, then the GPU stops")

    def set_idle(self, minutes: int) -> None:
        """How long the GPU stays warm after this user's requests (1 to 30 minutes)."""
        self._state.idle_minutes = clamp_idle(minutes)
        self._state.changed()
