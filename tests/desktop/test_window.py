"""The desktop app's real window against a real gateway, worker and Redis (under Xvfb)."""

from __future__ import annotations

import os
import time

import redis as redis_sync
from PIL import Image

from clients.desktop.view import LEVEL_COLOURS, printable
from services.protocol import names
from services.protocol.periods import month_label
from tests.desktop.conftest import ARTIFACTS, ROOT, pump
from tests.desktop.screens import screenshot


def transcript(app) -> str:
    """What the prompt panel's text widget shows."""
    return app.view.output.get("1.0", "end")


def pump_until_shown(app, widget, text: str, *, timeout_s: float) -> None:
    """Pump Tk until ``widget`` shows exactly ``text``."""
    pump(app.root, lambda: widget.cget("text") == text, timeout_s=timeout_s, what=repr(text))


def ask(app, prompt: str) -> None:
    """Type ``prompt`` into the Entry and press Send, as a user would."""
    app.view.prompt.delete(0, "end")
    app.view.prompt.insert(0, prompt)
    app.view.send_button.invoke()


def test_a_prompt_typed_in_the_window_streams_its_answer_into_the_text_widget(
    open_app, admin_token
):
    """Send streams the answer token by token into the text widget; history keeps both turns."""
    app = open_app(admin_token)
    seen: list[str] = []
    app.state.subscribe(lambda s: seen.append(s.history[-1].answer if s.history else ""))
    first_prompt = "What is the capital of France?"
    ask(app, first_prompt)
    assert app.state.streaming
    assert f"> {first_prompt}" in transcript(app)
    pump(app.root, lambda: not app.state.streaming, timeout_s=60, what="the first answer")
    first = app.state.history[0]
    assert first.error == ""
    assert first.answer.strip()
    assert printable(first.answer) in transcript(app)
    partial = {text for text in seen if text and text != first.answer}
    assert partial, "the answer arrived in one piece, not streamed"
    assert app.view.send_button.instate(["!disabled"])

    ask(app, "The end")
    pump(app.root, lambda: not app.state.streaming, timeout_s=30, what="the second answer")
    assert [e.prompt for e in app.state.history] == [first_prompt, "The end"]
    assert f"> {first_prompt}" in transcript(app)
    assert "> The end" in transcript(app)
    shot = screenshot(app.root, ARTIFACTS / "desktop-main.png")
    assert Image.open(shot).size[0] > 400
    if os.environ.get("TINYLLAMA_UPDATE_SCREENSHOT"):
        screenshot(app.root, ROOT / "docs" / "desktop.png", max_colours=64)


def test_an_admin_sees_the_gpu_ready_then_stopped_after_pressing_stop_gpu(open_app, admin_token):
    """Stop GPU (admin) drains the fleet; the panel shows ready, then stopped, and says so."""
    app = open_app(admin_token)
    assert app.view.stop_gpu_button.instate(["!disabled"])
    pump(app.root, lambda: app.state.gpu is not None, timeout_s=10, what="GET /gpu")
    if app.state.gpu["state"] != "ready":
        app.view.start_button.invoke()
    pump_until_shown(app, app.view.gpu_state, "state: ready", timeout_s=60)
    assert "instance:" in app.view.gpu_details.cget("text")
    app.view.stop_gpu_button.invoke()
    pump_until_shown(app, app.view.gpu_state, "state: stopped", timeout_s=30)
    pump_until_shown(app, app.view.gpu_note, "stopped: the GPU is off", timeout_s=5)


def test_a_user_without_the_admin_scope_sees_start_and_stop_disabled_with_the_reason(
    open_app, user_token
):
    """Without the admin scope, Start/Stop GPU are disabled and the panel says why."""
    app = open_app(user_token)
    app.root.update()
    assert app.view.start_button.instate(["disabled"])
    assert app.view.stop_gpu_button.instate(["disabled"])
    assert "admin scope" in app.view.gpu_note.cget("text")


def test_the_cost_panel_turns_warning_then_stopped_colours_at_the_thresholds(
    open_app, user_token, desktop_redis
):
    """The cost panel's colour follows the server's budget: warning, then the hard stop."""
    app = open_app(user_token)
    client = redis_sync.Redis.from_url(desktop_redis.url)
    key = names.gpu_seconds_key(month_label(time.time()))

    def level_is(level: str) -> bool:
        return str(app.view.cost_level.cget("bg")) == LEVEL_COLOURS[level]

    try:
        client.set(key, 0)
        pump(app.root, lambda: level_is("normal"), timeout_s=10, what="normal colour")
        client.set(key, 6000)  # 1 USD a second: past the 5000 USD warning
        pump(app.root, lambda: level_is("warning"), timeout_s=10, what="warning colour")
        assert "warning at $5000.00, hard stop at $9000.00" in app.view.cost_details.cget("text")
        client.set(key, 9500)
        pump(app.root, lambda: level_is("stopped"), timeout_s=10, what="hard-stop colour")
        assert app.view.cost_level.cget("text") == "monthly budget reached"
    finally:
        client.set(key, 0)
        client.close()


def test_the_openai_backend_streams_from_this_services_v1_and_greys_the_gpu_panel(
    open_app, admin_token, service
):
    """An OpenAI-compatible endpoint (here our own /v1) answers; GPU controls grey out."""
    app = open_app(admin_token)
    app.view.base_url.delete(0, "end")
    app.view.base_url.insert(0, f"{service.url}/v1")
    app.view.model.delete(0, "end")
    app.view.model.insert(0, "tinyllama")  # this service's alias (an unknown model is a 404)
    app.view.api_key.insert(0, admin_token)
    app.view.apply_button.invoke()
    assert app.view.api_key.get() == ""
    assert app.settings.openai_model == "tinyllama"
    app.view.backend_buttons["openai"].invoke()
    assert app.state.backend == "openai"
    assert app.view.stop_gpu_button.instate(["disabled"])
    assert "n/a" in app.view.gpu_state.cget("text")
    ask(app, "Hello there")
    pump(app.root, lambda: not app.state.streaming, timeout_s=60, what="the /v1 answer")
    exchange = app.state.history[-1]
    assert exchange.error == "", service.output()[-4000:]
    assert exchange.answer.strip()
    assert printable(exchange.answer) in transcript(app)


def test_stop_ends_a_streaming_answer_and_keeps_what_had_arrived(open_app, admin_token):
    """Stop mid-answer closes the stream: no more tokens arrive and Send works again."""
    app = open_app(admin_token)
    ask(app, "Tell me a long story")
    pump(
        app.root,
        lambda: bool(app.state.history[-1].answer) or not app.state.streaming,
        timeout_s=60,
        what="the first token",
    )
    assert app.view.stop_button.instate(["!disabled"])
    app.view.stop_button.invoke()
    pump(app.root, lambda: not app.state.streaming, timeout_s=10, what="the stream closed")
    kept = app.state.history[-1].answer
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        app.root.update()
    assert app.state.history[-1].answer == kept
    assert app.state.history[-1].done
    assert app.view.send_button.instate(["!disabled"])
