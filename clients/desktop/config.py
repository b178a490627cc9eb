"""Settings that persist between sessions: backend, idle minutes, window geometry."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

APP_DIR = "tinyllama-desktop"
IDLE_MIN, IDLE_MAX, IDLE_DEFAULT = 1, 30, 5


def config_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The platform's per-user config folder for the app (APPDATA, Library, XDG)."""
    if sys.platform == "win32" and environ.get("APPDATA"):
        return Path(environ["APPDATA"]) / APP_DIR
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP_DIR
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / APP_DIR


def clamp_idle(minutes: int) -> int:
    """Idle minutes within what the server accepts (1 to 30)."""
    return max(IDLE_MIN, min(IDLE_MAX, int(minutes)))


@dataclasses.dataclass(frozen=True, kw_only=True)
class DesktopSettings:
    """What the app remembers; secrets are never here (see ``secrets``)."""

    backend: str = "service"
    service_url: str = "http://127.0.0.1:8080"
    openai_base_url: str = "https://api.openai.com/v1"
    openai_model: str = "gpt-4o-mini"
    idle_minutes: int = IDLE_DEFAULT
    geometry: str = "1180x640"

    @classmethod
    def load(cls, folder: Path) -> DesktopSettings:
        """The saved settings, or the defaults; unknown or broken entries are ignored."""
        try:
            raw = json.loads((folder / "settings.json").read_text())
        except (OSError, ValueError):
            return cls()
        names = {field.name for field in dataclasses.fields(cls)}
        known = {k: v for k, v in raw.items() if k in names} if isinstance(raw, dict) else {}
        try:
            loaded = cls(**known)
        except TypeError:
            return cls()
        return dataclasses.replace(loaded, idle_minutes=clamp_idle(loaded.idle_minutes))

    def save(self, folder: Path) -> None:
        """Write the settings as JSON in ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "settings.json").write_text(json.dumps(dataclasses.asdict(self), indent=2))
