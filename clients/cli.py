"""``tinyllama``: dev tokens, prompts, jobs and the config registry from a terminal."""

from __future__ import annotations

import argparse
import json
import os
import sys

from clients.sdk import ApiError, Client


def _token_command(args: argparse.Namespace) -> int:
    from services.devstack.identity import (
        NotLocalError,
        default_keys_dir,
        ensure_dev_key,
        mint_token,
        require_local,
    )

    try:
        require_local(os.environ.get("TINYLLAMA_ENV", "local"))
    except NotLocalError as exc:
        print(f"tinyllama token: {exc}", file=sys.stderr)
        return 2
    key = ensure_dev_key(default_keys_dir())
    scopes = tuple(args.scope or ())
    print(mint_token(key, subject=args.sub, scopes=scopes, ttl_s=args.ttl))
    return 0


def _client(args: argparse.Namespace) -> Client:
    token = args.token or os.environ.get("TINYLLAMA_TOKEN")
    if not token:
        raise SystemExit(
            "tinyllama: no token: pass --token or set TINYLLAMA_TOKEN "
            "(locally: export TINYLLAMA_TOKEN=$(tinyllama token --sub me))"
        )
    return Client(args.url, token)


def _infer_command(args: argparse.Namespace) -> int:
    client = _client(args)
    options = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature}
    if args.stop:
        options["stop"] = args.stop
    if args.chat:
        options["chat"] = True
    if args.stream:
        return _stream(client, args.prompt, options)
    job = client.generate(args.prompt, **options)
    if args.json:
        print(json.dumps(job, indent=2))
    elif job.get("result"):
        print(job["result"]["text"])
        print(
            f"(job {job['id']}, {job['result']['usage']['completion_tokens']} tokens)",
            file=sys.stderr,
        )
    elif job.get("error"):
        print(
            f"tinyllama: job {job['id']} {job['status']}: {job['error']['message']}",
            file=sys.stderr,
        )
    else:
        print(f"job {job['id']} is {job['status']}: poll {args.url}{job.get('url', '')}")
    return 0 if job.get("status") in ("succeeded", "queued", "running", "starting") else 1


def _stream(client: Client, prompt: str, options: dict) -> int:
    """Print tokens as they come; the job id on stderr; always end the line."""
    try:
        for event, data in client.stream(prompt, **options):
            if event == "job":
                print(f"(job {data['id']})", file=sys.stderr, flush=True)
            elif event == "token":
                print(data["text"], end="", flush=True)
            elif event == "error":
                print(f"\ntinyllama: job failed: {data.get('message')}", file=sys.stderr)
                return 1
    finally:
        print(flush=True)  # the answer's last line is a whole line, whatever happened
    return 0


def _job_command(args: argparse.Namespace) -> int:
    client = _client(args)
    if not args.cancel:
        print(json.dumps(client.job(args.job_id), indent=2))
        return 0
    try:
        result = client.cancel(args.job_id)
    except ApiError as exc:
        if exc.status != 409:
            raise
        print(f"tinyllama: {exc.problem.get('detail', 'the job had already ended')}")
        return 1
    if result["status"] == "cancelled":
        print(f"job {args.job_id} cancelled")
    else:
        print(f"job {args.job_id}: cancel requested, it is still {result['status']}")
    return 0


def _gpu_command(args: argparse.Namespace) -> int:
    client = _client(args)
    actions = {"status": client.gpu, "start": client.gpu_start, "stop": client.gpu_stop}
    print(json.dumps(actions[args.action](), indent=2))
    return 0


def _usage_command(args: argparse.Namespace) -> int:
    print(json.dumps(_client(args).usage(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    parser = argparse.ArgumentParser(prog="tinyllama", description="TinyLlama Serve client.")
    sub = parser.add_subparsers(dest="command", required=True)

    token = sub.add_parser("token", help="print a dev JWT (local environments only)")
    token.add_argument("--sub", required=True, help="the token's subject (user name)")
    token.add_argument("--scope", action="append", help="grant a scope (repeatable)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.set_defaults(run=_token_command)

    default_url = os.environ.get("TINYLLAMA_URL", "http://127.0.0.1:8080")
    commands = (
        ("infer", "send a prompt"),
        ("job", "show or cancel a job"),
        ("gpu", "show, start or stop the GPU fleet (start/stop: admin scope)"),
        ("usage", "your usage, cost and the budget"),
    )
    for name, helptext in commands:
        cmd = sub.add_parser(name, help=helptext)
        cmd.add_argument("--url", default=default_url, help="gateway URL (TINYLLAMA_URL)")
        cmd.add_argument("--token", help="bearer token (TINYLLAMA_TOKEN)")
        if name == "infer":
            cmd.add_argument("prompt")
            cmd.add_argument("--max-new-tokens", type=int, default=64)
            cmd.add_argument("--temperature", type=float, default=0.0)
            cmd.add_argument("--stop", action="append")
            cmd.add_argument(
                "--chat", action="store_true", help="ask as a chat turn (the model's template)"
            )
            cmd.add_argument("--stream", action="store_true", help="print tokens as they come")
            cmd.add_argument("--json", action="store_true", help="print the whole job as JSON")
            cmd.set_defaults(run=_infer_command)
        elif name == "job":
            cmd.add_argument("job_id")
            cmd.add_argument("--cancel", action="store_true")
            cmd.set_defaults(run=_job_command)
        elif name == "gpu":
            cmd.add_argument(
                "action", nargs="?", default="status", choices=("status", "start", "stop")
            )
            cmd.set_defaults(run=_gpu_command)
        else:
            cmd.set_defaults(run=_usage_command)

    registry = sub.add_parser("registry", help="read and write the config registry", add_help=False)
    registry.add_argument("rest", nargs=argparse.REMAINDER)
    registry.set_defaults(run=lambda a: _registry(a.rest))
    return parser


def _registry(rest: list[str]) -> int:
    from services.registry.cli import main as registry_main

    return registry_main(rest)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tinyllama`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["registry"]:
        return _registry(argv[1:])  # its own parser, options included
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ApiError as exc:
        print(f"tinyllama: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        url = getattr(args, "url", "")
        print(f"tinyllama: cannot reach the gateway at {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
