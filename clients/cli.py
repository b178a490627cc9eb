"""``tinyllama``: login, prompts, chat, jobs, the GPU and the config registry from a terminal.

Every command takes ``--json``. Without ``--token``/``TINYLLAMA_TOKEN`` the stored login
(``tinyllama login``) is used, refreshed when it is about to expire.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import json
import os
import sys
import time
import webbrowser
from collections.abc import Callable, Mapping
from typing import Any

from clients.auth import (
    LoginConfig,
    LoginError,
    current_token,
    default_store,
    load_login_config,
    login_dev,
    login_machine,
    login_pkce,
    logout,
)
from clients.auth.config import is_local
from clients.chat import run_chat
from clients.sdk import ApiError, Client


class Context:
    """What every command gets: its arguments, the environment and the browser hook."""

    def __init__(
        self,
        args: argparse.Namespace,
        environ: Mapping[str, str],
        open_browser: Callable[[str], object],
    ) -> None:
        self.args = args
        self.environ = environ
        self.open_browser = open_browser
        self.store = default_store(environ)

    @property
    def env(self) -> str:
        """The environment this login belongs to (``TINYLLAMA_ENV``, default local)."""
        return self.environ.get("TINYLLAMA_ENV", "local")

    def login_config(self) -> LoginConfig | None:
        """The identity provider's settings; None locally (dev tokens)."""
        return None if is_local(self.environ) else load_login_config(self.environ)

    def client(self) -> Client:
        """An SDK client with the explicit token, else the stored (refreshing) login."""
        token = self.args.token or self.environ.get("TINYLLAMA_TOKEN")
        if token:
            return Client(self.args.url, token)
        if self.store.load() is None:
            raise LoginError(
                "not logged in: run `tinyllama login` (or pass --token / set TINYLLAMA_TOKEN)"
            )
        config = self.login_config()
        return Client(self.args.url, lambda: current_token(self.store, config) or "")

    def show(self, value: Any, text: str) -> None:
        """``value`` as JSON with ``--json``, else ``text``."""
        print(json.dumps(value, indent=2) if self.args.json else text)


def claims_of(token: str) -> dict[str, Any]:
    """A JWT's claims, unverified: for showing who you are, never for trusting it."""
    try:
        body = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (IndexError, ValueError):
        return {}


def _token_command(ctx: Context) -> int:
    from services.devstack.identity import (
        NotLocalError,
        default_keys_dir,
        ensure_dev_key,
        mint_token,
        require_local,
    )

    try:
        require_local(ctx.env)
    except NotLocalError as exc:
        print(f"tinyllama token: {exc}", file=sys.stderr)
        return 2
    key = ensure_dev_key(default_keys_dir())
    token = mint_token(
        key, subject=ctx.args.sub, scopes=tuple(ctx.args.scope or ()), ttl_s=ctx.args.ttl
    )
    ctx.show({"access_token": token}, token)
    return 0


def _open_and_tell(ctx: Context) -> Callable[[str], object]:
    def open_browser(url: str) -> object:
        print(f"Opening the sign-in page. If no browser opens, visit:\n  {url}", file=sys.stderr)
        return ctx.open_browser(url)

    return open_browser


def _login_command(ctx: Context) -> int:
    if is_local(ctx.environ):
        tokens = login_dev(subject=ctx.args.sub or getpass.getuser(), env=ctx.env)
    else:
        config = load_login_config(ctx.environ)
        if ctx.args.machine:
            tokens = login_machine(config, env=ctx.env)
        else:
            tokens = login_pkce(config, env=ctx.env, open_browser=_open_and_tell(ctx))
    ctx.store.save(tokens)
    subject = claims_of(tokens.access_token).get("sub", "?")
    ctx.show(
        {"subject": subject, "env": ctx.env, "kind": tokens.kind},
        f"Logged in as {subject} ({ctx.env}).",
    )
    return 0


def _logout_command(ctx: Context) -> int:
    had = logout(ctx.login_config() if ctx.store.load() else None, ctx.store)
    ctx.show({"logged_out": had}, "Logged out." if had else "Not logged in.")
    return 0


def _whoami_command(ctx: Context) -> int:
    tokens = ctx.store.load()
    if tokens is None:
        ctx.show({"logged_in": False}, "Not logged in: run `tinyllama login`.")
        return 1
    claims = claims_of(tokens.access_token)
    info = {
        "logged_in": True,
        "subject": claims.get("sub", ""),
        "env": tokens.env,
        "kind": tokens.kind,
        "scopes": claims.get("scope", "").split(),
        "expires_in_s": round(tokens.expires_at - time.time()),
        "can_refresh": bool(tokens.refresh_token),
    }
    text = (
        f"{info['subject']} ({tokens.kind} login, {tokens.env}); scopes: "
        f"{' '.join(info['scopes']) or '-'}; token expires in {info['expires_in_s']} s"
    )
    ctx.show(info, text)
    return 0


def _options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
    }
    if args.stop:
        options["stop"] = args.stop
    if args.chat:
        options["chat"] = True
    return options


def _infer_stream(ctx: Context, client: Client, options: dict[str, Any]) -> int:
    job_id, tokens, failed = "", 0, None
    try:
        for event, data in client.stream(ctx.args.prompt, **options):
            if event == "job":
                job_id = data["id"]
            elif event == "status" and data.get("status") == "starting":
                print("[gpu starting: waiting for a worker…]", file=sys.stderr, flush=True)
            elif event == "token":
                tokens += 1
                if not ctx.args.json:
                    print(data["text"], end="", flush=True)
            elif event == "done":
                tokens = data.get("usage", {}).get("completion_tokens", tokens)
                if ctx.args.json:
                    print(json.dumps({"id": job_id, "status": "succeeded", "result": data}))
            elif event == "error":
                failed = data
    finally:
        if not ctx.args.json:
            print()  # a stream always ends its line
    if failed is not None:
        if ctx.args.json:
            print(json.dumps({"id": job_id, "status": failed.get("status"), "error": failed}))
        print(f"tinyllama: job {job_id} failed: {failed.get('message')}", file=sys.stderr)
        return 1
    print(f"(job {job_id}, {tokens} tokens)", file=sys.stderr)
    return 0


def _infer_command(ctx: Context) -> int:
    client = ctx.client()
    options = _options(ctx.args)
    if ctx.args.stream:
        return _infer_stream(ctx, client, options)
    job = client.generate(ctx.args.prompt, **options)
    if ctx.args.json:
        print(json.dumps(job, indent=2))
    elif job.get("result"):
        print(job["result"]["text"])
        used = job["result"].get("usage", {}).get("completion_tokens", 0)
        print(f"(job {job['id']}, {used} tokens)", file=sys.stderr)
    else:
        print(f"job {job['id']} is {job['status']}: poll {ctx.args.url}{job.get('url', '')}")
    return 0 if job.get("status") in ("succeeded", "queued", "running", "starting") else 1


def _job_command(ctx: Context) -> int:
    client, job_id = ctx.client(), ctx.args.job_id
    if not ctx.args.cancel:
        print(json.dumps(client.job(job_id), indent=2))  # JSON, with or without --json
        return 0
    try:
        job = client.cancel(job_id)
    except ApiError as exc:
        if exc.status == 409 and exc.slug == "already-finished":
            ctx.show(exc.problem, f"job {job_id} had already finished")
            return 0
        raise
    if job["status"] == "cancelled":
        text = f"job {job_id} cancelled"
    elif job["status"] in ("succeeded", "failed", "expired"):
        text = f"job {job_id} had already finished ({job['status']})"
    else:
        text = f"cancel requested: job {job_id} stops at its next token"
    ctx.show(job, text)
    return 0


def _gpu_command(ctx: Context) -> int:
    client = ctx.client()
    actions = {"status": client.gpu, "start": client.gpu_start, "stop": client.gpu_stop}
    print(json.dumps(actions[ctx.args.action](), indent=2))  # JSON, with or without --json
    return 0


def _usage_command(ctx: Context) -> int:
    print(json.dumps(ctx.client().usage(), indent=2))  # JSON, with or without --json
    return 0


def _chat_command(ctx: Context) -> int:
    options = {"max_tokens": ctx.args.max_new_tokens, "temperature": ctx.args.temperature}
    return run_chat(
        ctx.client(),
        read_line=sys.stdin.readline,
        out=sys.stdout,
        err=sys.stderr,
        as_json=ctx.args.json,
        system=ctx.args.system,
        **options,
    )


def _gateway_options(cmd: argparse.ArgumentParser, default_url: str) -> None:
    cmd.add_argument("--url", default=default_url, help="gateway URL (TINYLLAMA_URL)")
    cmd.add_argument("--token", help="bearer token (TINYLLAMA_TOKEN; else the stored login)")


def _generation_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--max-new-tokens", type=int, default=64)
    cmd.add_argument("--temperature", type=float, default=0.0)


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="tinyllama", description="TinyLlama Serve client.")
    sub = parser.add_subparsers(dest="command", required=True)
    # TINYLLAMA_API_URL is what `tinyllama registry export` writes for the stack's api/url.
    default_url = (
        environ.get("TINYLLAMA_URL") or environ.get("TINYLLAMA_API_URL") or "http://127.0.0.1:8080"
    )

    def command(name: str, helptext: str, run: Callable[[Context], int], *, gateway: bool = True):
        cmd = sub.add_parser(name, help=helptext)
        cmd.add_argument("--json", action="store_true", help="print JSON instead of text")
        if gateway:
            _gateway_options(cmd, default_url)
        cmd.set_defaults(run=run)
        return cmd

    token = command(
        "token", "print a dev JWT (local environments only)", _token_command, gateway=False
    )
    token.add_argument("--sub", required=True, help="the token's subject (user name)")
    token.add_argument("--scope", action="append", help="grant a scope (repeatable)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")

    login = command(
        "login", "sign in (Cognito hosted UI; locally a dev token)", _login_command, gateway=False
    )
    login.add_argument("--sub", help="local only: the dev token's subject (default: you)")
    login.add_argument("--machine", action="store_true", help="client credentials (machines)")
    command("logout", "revoke and forget the stored login", _logout_command, gateway=False)
    command("whoami", "who the stored login is", _whoami_command, gateway=False)

    infer = command("infer", "send a prompt", _infer_command)
    infer.add_argument("prompt")
    _generation_options(infer)
    infer.add_argument("--stop", action="append")
    infer.add_argument("--stream", action="store_true", help="print tokens as they come")
    infer.add_argument(
        "--chat", action="store_true", help="ask as a chat turn (the model's chat template)"
    )

    chat = command("chat", "an interactive, streaming conversation", _chat_command)
    _generation_options(chat)
    chat.add_argument("--system", default="", help="a system message for the conversation")

    job = command("job", "show or cancel a job", _job_command)
    job.add_argument("job_id")
    job.add_argument("--cancel", action="store_true")
    gpu = command("gpu", "show, start or stop the GPU fleet (start/stop: admin)", _gpu_command)
    gpu.add_argument("action", nargs="?", default="status", choices=("status", "start", "stop"))
    command("usage", "your usage, cost and the budget", _usage_command)
    command("desktop", "open the desktop app (TinyLlama Desktop)", _desktop_command)

    registry = sub.add_parser("registry", help="read and write the config registry", add_help=False)
    registry.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _desktop_command(ctx: Context) -> int:
    """The desktop window against ``--url``, with ``--token`` or the stored login."""
    from clients.desktop.app import main as desktop

    environ = {**ctx.environ, "TINYLLAMA_URL": ctx.args.url}
    if ctx.args.token:
        environ["TINYLLAMA_TOKEN"] = ctx.args.token
    return desktop(environ)


def _registry(rest: list[str]) -> int:
    from services.registry.cli import main as registry_main

    return registry_main(rest)


def main(
    argv: list[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    open_browser: Callable[[str], object] = webbrowser.open,
) -> int:
    """Entry point of the ``tinyllama`` command (``environ`` and ``open_browser``: for tests)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["registry"]:
        return _registry(argv[1:])  # its own parser, options included
    environ = os.environ if environ is None else environ
    args = build_parser(environ).parse_args(argv)
    ctx = Context(args, environ, open_browser)
    try:
        return int(args.run(ctx))
    except ApiError as exc:
        print(f"tinyllama: {exc}", file=sys.stderr)
        return 1
    except LoginError as exc:
        print(f"tinyllama: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        url = getattr(args, "url", "")
        print(f"tinyllama: cannot reach the gateway at {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
