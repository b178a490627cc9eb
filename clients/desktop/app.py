"""Compose the desktop app: settings, secrets, token source, backends, controllers, view."""

from __future__ import annotations

import dataclasses
import gc
import os
import tkinter as tk
from collections.abc import Mapping
from pathlib import Path

from clients.desktop.backends import Backend, OpenAIBackend, ServiceBackend
from clients.desktop.bridge import Bridge
from clients.desktop.config import DesktopSettings, config_dir
from clients.desktop.controllers.auth import AuthController
from clients.desktop.controllers.cost import CostController
from clients.desktop.controllers.gpu import GpuController
from clients.desktop.controllers.prompt import PromptController
from clients.desktop.keystore import SecretStore
from clients.desktop.state import AppState
from clients.desktop.tokens import LoginTokenSource, TokenSource
from clients.desktop.view import MainView
from clients.sdk import Client

OPENAI_KEY = "openai-api-key"


class DesktopApp:
    """The running app: owns the state, the controllers and the view of one Tk root."""

    def __init__(
        self,
        root: tk.Tk,
        *,
        folder: Path,
        token_source: TokenSource,
        secrets: SecretStore | None = None,
        gpu_poll_ms: int | None = None,
        cost_poll_ms: int | None = None,
    ) -> None:
        self.root = root
        self.folder = folder
        self.settings = DesktopSettings.load(folder)
        self.secrets = secrets or SecretStore(folder)
        self.state = AppState(
            backend=self.settings.backend, idle_minutes=self.settings.idle_minutes
        )
        self.bridge = Bridge(root)
        self._timers: dict[object, str] = {}
        self.auth = AuthController(self.state, token_source)
        self._service: ServiceBackend | None = None
        self._openai: OpenAIBackend | None = None
        self.prompt = PromptController(self.state, self.bridge, self.backend)
        self.gpu = GpuController(self.state, self.bridge, self.service_client)
        self.cost = CostController(self.state, self.bridge, self.service_client)
        if gpu_poll_ms is not None:
            self.gpu.poll_ms = gpu_poll_ms
        if cost_poll_ms is not None:
            self.cost.poll_ms = cost_poll_ms
        self.view = MainView(
            root,
            actions={
                "send": self.prompt.send,
                "stop_prompt": self.prompt.stop,
                "gpu_start": self.gpu.start,
                "gpu_stop": self.gpu.stop,
                "idle": self.gpu.set_idle,
                "backend": self.select_backend,
                "apply_backend": self.apply_backend,
            },
        )
        self.view.backend_var.set(self.settings.backend)
        self.view.base_url.insert(0, self.settings.openai_base_url)
        self.view.model.insert(0, self.settings.openai_model)
        root.geometry(self.settings.geometry)
        self.state.subscribe(self.view.render)
        root.protocol("WM_DELETE_WINDOW", self.close)

    def start(self) -> None:
        """Sign in, render, and start the GPU (2 s) and cost (30 s) polls."""
        token = self.auth.sign_in()
        if token:
            self._service = ServiceBackend(Client(self.settings.service_url, token))
        self.state.changed()
        self._every(self.gpu.poll_ms, self.gpu.refresh)
        self._every(self.cost.poll_ms, self.cost.refresh)

    def _every(self, period_ms: int, action) -> None:
        def tick() -> None:
            action()
            self._timers[action] = self.root.after(period_ms, tick)

        tick()

    def service_client(self) -> Client | None:
        """The SDK client while this service is the backend; else ``None`` (panels grey out)."""
        if self.state.backend != "service" or self._service is None:
            return None
        return self._service.client

    def backend(self) -> Backend:
        """The backend selected now."""
        if self.state.backend == "openai":
            if self._openai is None:
                self._openai = OpenAIBackend(
                    self.settings.openai_base_url,
                    self.secrets.get(OPENAI_KEY) or "none",
                    model=self.settings.openai_model,
                )
            return self._openai
        if self._service is None:
            raise LookupError("not signed in to the TinyLlama service")
        return self._service

    def select_backend(self, name: str) -> None:
        """Switch backend; GPU and cost panels grey out for endpoints without them."""
        self.state.backend = name
        self._remember(backend=name)
        self.state.changed()
        self.gpu.refresh()
        self.cost.refresh()

    def apply_backend(self) -> None:
        """Take the base URL, model and API key typed in (the key goes to the keyring only)."""
        key = self.view.api_key.get().strip()
        if key:
            self.secrets.set(OPENAI_KEY, key)
            self.view.api_key.delete(0, "end")
        self._remember(
            openai_base_url=self.view.base_url.get().strip(),
            openai_model=self.view.model.get().strip() or self.settings.openai_model,
        )
        self._openai = None

    def _remember(self, **changes) -> None:
        self.settings = dataclasses.replace(self.settings, **changes)
        self.settings.save(self.folder)

    def close(self) -> None:
        """Save the settings (geometry, idle minutes, backend) and close the window."""
        self._remember(geometry=self.root.geometry(), idle_minutes=self.state.idle_minutes)
        for timer in self._timers.values():
            self.root.after_cancel(timer)
        self.bridge.close()
        self.state.unsubscribe_all()  # threads still running must not keep Tk objects alive
        self.root.destroy()
        gc.collect()  # Tk variables must die on the Tk thread, not in a worker thread's GC


def main(environ: Mapping[str, str] = os.environ) -> int:
    """Open the window (``python -m clients.desktop``; ``tinyllama desktop`` calls this)."""
    folder = config_dir(environ)
    root = tk.Tk()
    app = DesktopApp(root, folder=folder, token_source=LoginTokenSource(environ))
    if environ.get("TINYLLAMA_URL"):
        app.settings = dataclasses.replace(app.settings, service_url=environ["TINYLLAMA_URL"])
    app.start()
    root.mainloop()
    return 0
