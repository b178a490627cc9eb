"""Where login goes: the Cognito domain, client id and scopes, from the registry or a file.

``tinyllama registry export`` writes the stack's ids as ``TINYLLAMA_COGNITO_*`` variables
(``eval "$(tinyllama registry export --format env)"``); without them, ``config.json`` in
the platform config dir holds the same under ``"login"``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Mapping
from pathlib import Path

# The loopback redirect the stack registers for the desktop client (cdk/config.py
# desktop_callback_urls): Cognito matches callback URLs exactly, port included.
DEFAULT_REDIRECT_PORT = 8765
DEFAULT_SCOPES = ("openid", "tinyllama/invoke")


class LoginError(Exception):
    """Login cannot go on; the message says what to do."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoginConfig:
    """One identity provider's endpoints and this client's registration there."""

    domain: str  # https://<prefix>.auth.<region>.amazoncognito.com
    client_id: str
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    redirect_port: int = DEFAULT_REDIRECT_PORT
    machine_client_id: str = ""
    client_secret: str = dataclasses.field(default="", repr=False)

    @property
    def authorize_url(self) -> str:
        """The hosted UI's authorization endpoint."""
        return f"{self.domain.rstrip('/')}/oauth2/authorize"

    @property
    def token_url(self) -> str:
        """The token endpoint (code, refresh and client-credentials grants)."""
        return f"{self.domain.rstrip('/')}/oauth2/token"

    @property
    def revoke_url(self) -> str:
        """Cognito's revocation endpoint (revokes a refresh token and its access tokens)."""
        return f"{self.domain.rstrip('/')}/oauth2/revoke"

    @property
    def redirect_uri(self) -> str:
        """The loopback redirect (RFC 8252), exactly as registered."""
        return f"http://localhost:{self.redirect_port}/callback"


def config_dir(environ: Mapping[str, str]) -> Path:
    """The platform's per-user config folder for tinyllama (``TINYLLAMA_CONFIG_DIR`` wins)."""
    if environ.get("TINYLLAMA_CONFIG_DIR"):
        return Path(environ["TINYLLAMA_CONFIG_DIR"])
    home = Path(environ.get("HOME") or Path.home())
    if sys.platform == "win32":
        return Path(environ.get("APPDATA") or home / "AppData" / "Roaming") / "tinyllama"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "tinyllama"
    return Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "tinyllama"


def _from_file(path: Path) -> dict[str, object]:
    if not path.is_file():
        return {}
    try:
        login = json.loads(path.read_text()).get("login", {})
    except (ValueError, AttributeError) as exc:
        raise LoginError(f"{path} is not valid JSON with a 'login' object: {exc}") from None
    return login if isinstance(login, dict) else {}


def load_login_config(environ: Mapping[str, str]) -> LoginConfig:
    """The login settings: the registry export's variables first, then ``config.json``."""
    saved = _from_file(config_dir(environ) / "config.json")

    def pick(variable: str, key: str, default: str = "") -> str:
        return str(environ.get(variable) or saved.get(key) or default)

    domain = pick("TINYLLAMA_COGNITO_DOMAIN", "domain")
    client_id = pick("TINYLLAMA_COGNITO_DESKTOP_CLIENT_ID", "client_id")
    machine_id = pick("TINYLLAMA_COGNITO_MACHINE_CLIENT_ID", "machine_client_id")
    if not domain or not (client_id or machine_id):
        raise LoginError(
            'no login settings: run `eval "$(tinyllama registry export --format env)"` for '
            f"your environment, or write {config_dir(environ) / 'config.json'} with "
            '{"login": {"domain": "https://…amazoncognito.com", "client_id": "…"}}'
        )
    scopes = pick("TINYLLAMA_LOGIN_SCOPES", "scopes", " ".join(DEFAULT_SCOPES))
    port = pick("TINYLLAMA_LOGIN_PORT", "redirect_port", str(DEFAULT_REDIRECT_PORT))
    return LoginConfig(
        domain=domain if "://" in domain else f"https://{domain}",
        client_id=client_id,
        scopes=tuple(scopes.split()),
        redirect_port=int(port),
        machine_client_id=machine_id,
        client_secret=environ.get("TINYLLAMA_CLIENT_SECRET", ""),
    )


def is_local(environ: Mapping[str, str]) -> bool:
    """True when ``TINYLLAMA_ENV`` is local (the default): login mints a dev token."""
    return environ.get("TINYLLAMA_ENV", "local") == "local"
