"""The ``tinyllama`` CLI: login/whoami/logout on a real auth server, chat on a real stack."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from clients.chat import run_chat
from clients.cli import main
from clients.sdk import Client
from tests.clients.conftest import follow_redirects


def _url(server) -> str:
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
def cli_environ(auth_server, login_config, tmp_path) -> dict[str, str]:
    """A non-local environment whose login goes to the test auth server; tokens in a file."""
    return {
        "TINYLLAMA_ENV": "test",
        "TINYLLAMA_COGNITO_DOMAIN": auth_server.url,
        "TINYLLAMA_COGNITO_DESKTOP_CLIENT_ID": login_config.client_id,
        "TINYLLAMA_LOGIN_PORT": str(login_config.redirect_port),
        "TINYLLAMA_CONFIG_DIR": str(tmp_path / "config"),
        "TINYLLAMA_TOKEN_STORE": "file",
    }


def _run(capsys, argv: list[str], environ: dict[str, str]) -> tuple[int, str, str]:
    code = main(argv, environ=environ, open_browser=follow_redirects)
    out, err = capsys.readouterr()
    return code, out, err


async def test_login_whoami_use_and_logout(capsys, cli_environ, auth_server, gateway):
    """login stores a PKCE login the gateway accepts; whoami shows it; logout revokes it."""

    def session() -> list[tuple[int, str, str]]:
        url = ["--url", _url(gateway)]
        return [
            _run(capsys, ["login", "--json"], cli_environ),
            _run(capsys, ["whoami", "--json"], cli_environ),
            _run(capsys, ["usage", "--json", *url], cli_environ),
            _run(capsys, ["logout"], cli_environ),
            _run(capsys, ["whoami", "--json"], cli_environ),
            _run(capsys, ["usage", *url], cli_environ),
        ]

    login, whoami, usage, logout, after, refused = await asyncio.to_thread(session)
    assert login[0] == 0
    assert json.loads(login[1])["subject"] == "alice"
    me = json.loads(whoami[1])
    assert me["subject"] == "alice"
    assert "tinyllama/invoke" in me["scopes"]
    assert me["can_refresh"] is True
    assert usage[0] == 0
    assert json.loads(usage[1])["subject"] == "alice"
    assert logout[1].strip() == "Logged out."
    assert all(r.revoked for r in auth_server.refresh_tokens.values())
    assert after[0] == 1
    assert json.loads(after[1]) == {"logged_in": False}
    assert refused[0] == 1
    assert "not logged in" in refused[2]


def test_login_explains_missing_settings(capsys, tmp_path):
    """Outside local, login without registry export or config file says how to get them."""
    environ = {"TINYLLAMA_ENV": "dev", "TINYLLAMA_CONFIG_DIR": str(tmp_path)}
    code, _, err = _run(capsys, ["login"], environ)
    assert code == 1
    assert "tinyllama registry export" in err


async def test_chat_keeps_history_and_prints_json_turns(
    capsys, monkeypatch, gateway, ready_worker, make_token
):
    """Scripted stdin: two turns (and a /reset) give two JSON replies; /exit leaves with 0."""
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello there\n/reset\nAnd again\n/exit\n"))
    environ = {"TINYLLAMA_TOKEN": make_token("chatter")}
    argv = ["chat", "--json", "--url", _url(gateway), "--max-new-tokens", "8"]
    code, out, _ = await asyncio.to_thread(_run, capsys, argv, environ)
    assert code == 0
    turns = [json.loads(line) for line in out.splitlines()]
    assert len(turns) == 2
    assert all(t["role"] == "assistant" and t["content"] for t in turns)


class _CtrlCOnFirstToken(io.StringIO):
    """A terminal where the user presses Ctrl-C as the first token of the first answer shows."""

    def __init__(self) -> None:
        super().__init__()
        self.pressed = False

    def write(self, text: str) -> int:
        if text and text != "you> " and not self.pressed:
            self.pressed = True
            raise KeyboardInterrupt
        return super().write(text)


async def test_ctrl_c_stops_the_answer_but_not_the_session(gateway, ready_worker, make_token):
    """Ctrl-C mid-answer prints [stopped], and the next message is answered in the same session."""
    lines = iter(["Tell me a long story\n", "Now a short one\n", ""])
    out, err = _CtrlCOnFirstToken(), io.StringIO()
    client = Client(_url(gateway), make_token("interrupter"))
    code = await asyncio.to_thread(
        run_chat, client, read_line=lambda: next(lines), out=out, err=err, max_tokens=8
    )
    assert code == 0
    text = out.getvalue()
    assert "[stopped]" in text
    second = text.split("[stopped]", 1)[1].split("you> ")[1]
    assert second.strip()


async def test_async_stream_names_its_job_first_and_ends_with_done(
    gateway, ready_worker, make_token
):
    """AsyncClient.stream yields ("job", {id}) first, token deltas, and the result last."""
    from clients.sdk import AsyncClient

    async with AsyncClient(_url(gateway), make_token("streamer")) as client:
        events = [item async for item in client.stream("Hello", max_new_tokens=4)]
        job = await client.get_job(events[0][1]["id"])
    assert events[0][0] == "job"
    assert any(event == "token" for event, _ in events)
    assert events[-1][0] == "done"
    assert job.status == "succeeded"
    assert job.result.text == events[-1][1]["text"]
