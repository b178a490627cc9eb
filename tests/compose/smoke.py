"""Black-box checks of a running compose stack, from the host (standard library only).

Used by docker/compose-test.sh:

    python3 tests/compose/smoke.py ready --url http://127.0.0.1:18080 --timeout 300
    python3 tests/compose/smoke.py infer --url http://127.0.0.1:18080 --token "$TOKEN"

Each subcommand prints what it saw and exits non-zero with the reason when a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

# The compose CPU worker's default (TINYLLAMA_MODEL=smollm2): a real instruct model, offline.
SERVED_MODEL = "SmolLM2-135M-Instruct"
QUESTION = "What is the capital of France? Answer briefly."
ANSWER = "Paris"  # what SmolLM2 answers greedily, with its chat template


class CheckFailed(Exception):
    """A smoke check did not hold."""


def _request(
    url: str, *, body: dict[str, Any] | None = None, token: str | None = None, timeout: float = 5
) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of one request; HTTP errors are answers, not exceptions."""
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw or b"{}")
        except ValueError:
            return exc.code, {"raw": raw.decode(errors="replace")}


def wait_for(url: str, *, timeout_s: float, what: str) -> dict[str, Any]:
    """Poll ``url`` until it answers 200; the last answer is in the error if it never does."""
    deadline = time.monotonic() + timeout_s
    last: object = "no answer"
    while time.monotonic() < deadline:
        try:
            status, body = _request(url, timeout=3)
            if status == 200:
                return body
            last = (status, body.get("reason", body))
        except OSError as exc:
            last = repr(exc)
        time.sleep(1)
    raise CheckFailed(f"{what}: not 200 after {timeout_s:.0f} s (last: {last})")


def check_ready(base: str, *, timeout_s: float, model: str) -> None:
    """/health answers, then /ready says a worker has loaded ``model``."""
    started = time.monotonic()
    health = wait_for(f"{base}/health", timeout_s=min(timeout_s, 120), what="/health")
    print(f"smoke: /health {health} after {time.monotonic() - started:.1f} s")
    ready = wait_for(f"{base}/ready", timeout_s=timeout_s, what="/ready")
    print(
        f"smoke: /ready model={ready.get('model')} workers={len(ready.get('workers', []))} "
        f"after {time.monotonic() - started:.1f} s"
    )
    if ready.get("model") != model:
        raise CheckFailed(f"/ready serves {ready.get('model')!r}, expected {model!r}")
    if not any(w.get("ready") for w in ready.get("workers", [])):
        raise CheckFailed(f"/ready lists no ready worker: {ready}")


def check_infer(base: str, *, token: str, model: str) -> None:
    """No token is refused with 401; with the dev token a question gets the right answer."""
    prompt = {"prompt": QUESTION, "chat": True, "temperature": 0, "max_new_tokens": 32}
    status, body = _request(f"{base}/infer", body=prompt)
    if status != 401:
        raise CheckFailed(f"/infer without a token answered {status}, expected 401: {body}")
    started = time.monotonic()
    status, body = _request(f"{base}/infer?mode=wait", body=prompt, token=token, timeout=90)
    took = time.monotonic() - started
    if status != 200 or body.get("status") != "succeeded":
        raise CheckFailed(f"/infer answered {status}: {body}")
    result = body.get("result") or {}
    usage = result.get("usage") or {}
    if not result.get("text") or usage.get("completion_tokens", 0) < 1:
        raise CheckFailed(f"/infer produced no text: {body}")
    if result.get("model") != model:
        raise CheckFailed(f"/infer answered from {result.get('model')!r}, expected {model!r}")
    if model == SERVED_MODEL and ANSWER not in result["text"]:
        raise CheckFailed(f"{QUESTION!r} was answered {result['text']!r}, without {ANSWER!r}")
    print(
        f"smoke: /infer {usage.get('completion_tokens')} tokens in {took:.2f} s: "
        f"{result['text']!r} ({result.get('finish_reason')})"
    )


def main(argv: list[str] | None = None) -> int:
    """Run one smoke check; exit 1 with the reason if it fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("check", choices=("ready", "infer"))
    parser.add_argument("--url", required=True, help="gateway base URL")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for /ready")
    parser.add_argument("--token", help="bearer token (infer)")
    parser.add_argument("--model", default=SERVED_MODEL, help="model name /ready must report")
    args = parser.parse_args(argv)
    base = args.url.rstrip("/")
    try:
        if args.check == "ready":
            check_ready(base, timeout_s=args.timeout, model=args.model)
        else:
            if not args.token:
                parser.error("infer needs --token")
            check_infer(base, token=args.token, model=args.model)
    except CheckFailed as exc:
        print(f"smoke: FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
