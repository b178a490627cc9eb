"""The desktop app's pieces without a window: settings, secrets, tokens, event translation."""

from __future__ import annotations

import stat

import pytest

from clients.desktop.backends import ServiceBackend
from clients.desktop.config import DesktopSettings, config_dir
from clients.desktop.controllers.errors import describe
from clients.desktop.keystore import SecretStore
from clients.desktop.state import AppState
from clients.desktop.tokens import ADMIN_SCOPE, EnvTokenSource, scopes_of
from clients.sdk import ApiError
from services.devstack.identity import mint_token


def test_settings_survive_a_restart_and_idle_minutes_are_clamped(tmp_path):
    """Backend, idle minutes and geometry are saved as JSON; idle is kept within 1 to 30."""
    DesktopSettings(backend="openai", idle_minutes=45, geometry="800x500+10+10").save(tmp_path)
    loaded = DesktopSettings.load(tmp_path)
    assert loaded.backend == "openai"
    assert loaded.idle_minutes == 30
    assert loaded.geometry == "800x500+10+10"


def test_broken_settings_fall_back_to_the_defaults(tmp_path):
    """An unreadable settings file opens the app with defaults rather than failing."""
    (tmp_path / "settings.json").write_text("{not json")
    assert DesktopSettings.load(tmp_path) == DesktopSettings()


def test_the_config_folder_follows_xdg_config_home(tmp_path):
    """On Linux the settings live under $XDG_CONFIG_HOME/tinyllama-desktop."""
    assert config_dir({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "tinyllama-desktop"


def test_without_a_keyring_secrets_go_to_an_owner_only_file_never_the_settings(tmp_path):
    """The file fallback is mode 0600 and the secret never appears in settings.json."""
    store = SecretStore(tmp_path, use_keyring=False)
    store.set("openai-api-key", "sk-very-secret")
    DesktopSettings().save(tmp_path)
    assert store.get("openai-api-key") == "sk-very-secret"
    assert stat.S_IMODE((tmp_path / "secrets.json").stat().st_mode) == 0o600
    assert "sk-very-secret" not in (tmp_path / "settings.json").read_text()
    assert "sk-very-secret" not in repr(store)


def test_the_env_token_source_prefers_tinyllama_token_and_refuses_outside_local():
    """TINYLLAMA_TOKEN wins; with no token outside local there is nothing to mint from."""
    assert EnvTokenSource({"TINYLLAMA_TOKEN": "abc"}).token() == "abc"
    with pytest.raises(LookupError):
        EnvTokenSource({"TINYLLAMA_ENV": "prod"}).token()


def test_the_admin_scope_is_read_from_the_token(signing_key):
    """The UI learns admin rights from the token's scope claim."""
    token = mint_token(signing_key, subject="ada", scopes=(ADMIN_SCOPE, "x"))
    assert scopes_of(token) == (ADMIN_SCOPE, "x")
    assert scopes_of("not-a-jwt") == ()


def test_a_402_reads_as_monthly_budget_reached():
    """Payment Required from the gateway is shown plainly."""
    assert describe(ApiError(402, {"title": "Payment Required"})) == "monthly budget reached"


class _FakeClient:
    def __init__(self, events):
        self.events = events
        self.options = {}

    def stream(self, prompt, **options):
        self.options = options
        yield from self.events


@pytest.mark.parametrize(
    "first",
    [("job", {"id": "j1"}), ("status", {"job_id": "j1", "status": "queued"})],
)
def test_the_job_id_comes_from_a_job_event_or_the_first_status(first):
    """Stop can cancel (the id from the job event or the first status); prompts are chat turns."""
    client = _FakeClient([first, ("token", {"text": "Hi"}), ("done", {"result": {}})])
    events = list(ServiceBackend(client).stream("p", idle_minutes=7))
    assert events == [("job", "j1"), ("token", "Hi"), ("done", "")]
    assert client.options == {"idle": 7, "chat": True, "max_new_tokens": 256}


def test_the_budget_level_follows_the_server_status():
    """ok, warning and exhausted map to the normal, warning and stopped colours."""
    levels = []
    for status in ("ok", "warning", "exhausted"):
        levels.append(AppState(usage={"budget": {"status": status}}).budget_level)
    assert levels == ["normal", "warning", "stopped"]
