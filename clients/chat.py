"""``tinyllama chat``: an interactive conversation that streams and keeps its history.

Each turn sends the whole conversation to ``/v1/chat/completions`` with ``stream: true``.
Ctrl-C while the model is answering stops that answer (the stream is closed, so the
gateway cancels the job) and keeps the session; Ctrl-C or Ctrl-D at the prompt leaves.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import IO, Any

from clients.sdk import ApiError, Client

HELP = "Type a message. /reset forgets the conversation, /exit (or Ctrl-D) leaves."
PROMPT = "you> "


def gpu_progress(client: Client, err: IO[str]) -> None:
    """Say so when the GPU is not ready: the first answer then waits for it to start."""
    try:
        state = client.gpu_status().state
    except (ApiError, OSError):  # a hint only: never stop the chat for it
        return
    if state != "ready":
        err.write(f"[gpu is {state}: the first answer waits for it to start…]\n")
        err.flush()


def _answer(client: Client, messages: list[dict[str, str]], out: IO[str], **options: Any) -> str:
    parts: list[str] = []
    replies = client.chat(messages, **options)
    try:
        for delta in replies:
            parts.append(delta)
            out.write(delta)
            out.flush()
    except KeyboardInterrupt:
        out.write(" [stopped]")
    finally:
        replies.close()  # closes the HTTP stream: the gateway cancels the job
    out.write("\n")
    return "".join(parts)


def run_chat(
    client: Client,
    *,
    read_line: Callable[[], str],
    out: IO[str],
    err: IO[str],
    as_json: bool = False,
    system: str = "",
    **options: Any,
) -> int:
    """The chat loop; ``read_line`` gives "" at end of input; ``as_json``: a JSON line a turn."""
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    if not as_json:
        err.write(HELP + "\n")
    gpu_progress(client, err)
    while True:
        if not as_json:
            out.write(PROMPT)
            out.flush()
        try:
            line = read_line()
        except KeyboardInterrupt:
            line = ""
        if not line or line.strip() == "/exit":
            if not as_json:
                out.write("\n")
            return 0
        text = line.strip()
        if text == "/reset":
            messages = messages[:1] if system else []
            continue
        if not text:
            continue
        messages.append({"role": "user", "content": text})
        sink = _Discard() if as_json else out
        reply = _answer(client, messages, sink, **options)
        messages.append({"role": "assistant", "content": reply})
        if as_json:
            out.write(json.dumps({"role": "assistant", "content": reply}) + "\n")
            out.flush()


class _Discard:
    """A text sink that keeps nothing (``--json`` prints whole replies, not deltas)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        """Nothing to flush."""
