"""AppState: the single source of truth the view renders."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

GPU_STATES = ("stopped", "starting", "ready", "draining")


@dataclasses.dataclass
class Exchange:
    """One prompt and its answer, kept for the session."""

    prompt: str
    answer: str = ""
    error: str = ""
    done: bool = False


@dataclasses.dataclass
class AppState:
    """Everything the window shows; controllers change it, then call ``changed()``."""

    backend: str = "service"
    idle_minutes: int = 5
    signed_in_as: str = ""
    is_admin: bool = False
    history: list[Exchange] = dataclasses.field(default_factory=list)
    streaming: bool = False
    job_id: str = ""
    gpu: dict[str, Any] | None = None
    gpu_note: str = ""
    gpu_controls_reason: str = ""
    usage: dict[str, Any] | None = None
    cost_note: str = ""
    _listeners: list[Callable[[AppState], None]] = dataclasses.field(default_factory=list)

    def subscribe(self, listener: Callable[[AppState], None]) -> None:
        """Call ``listener(state)`` after every change."""
        self._listeners.append(listener)

    def unsubscribe_all(self) -> None:
        """Forget every listener (the window is gone)."""
        self._listeners.clear()

    def changed(self) -> None:
        """Tell every listener (the view) to render the state again."""
        for listener in self._listeners:
            listener(self)

    @property
    def service_panels(self) -> bool:
        """GPU and cost panels exist only for this service's own API."""
        return self.backend == "service"

    @property
    def budget_level(self) -> str:
        """``normal``, ``warning`` or ``stopped``, from the server's budget status."""
        if not self.usage:
            return "normal"
        status = self.usage.get("budget", {}).get("status", "ok")
        if status == "exhausted":
            return "stopped"
        return "warning" if status == "warning" else "normal"
