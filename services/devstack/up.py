"""``make up``: Redis, gateway and one worker in the foreground; Ctrl-C stops them all."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from services.devstack.identity import (
    DEV_CLIENT_ID,
    DEV_ISSUER,
    NotLocalError,
    ensure_dev_key,
    jwks_path,
    mint_token,
    require_local,
)
from services.devstack.redis_server import NoRedisError, find_redis
from services.protocol.process import become_subreaper


def _say(message: str) -> None:
    print(f"[make up] {message}", flush=True)


def build_env(environ: dict[str, str], *, redis_url: str, keys_dir: Path) -> dict[str, str]:
    """The environment gateway and worker get: the caller's, plus local defaults."""
    env = dict(environ)
    env.setdefault("TINYLLAMA_ENV", "local")
    env["REDIS_URL"] = redis_url
    env.setdefault("TINYLLAMA_PORT", "8080")
    if not env.get("TINYLLAMA_JWKS_URL"):
        # No operator-provided issuer: trust the dev key minted here.
        env["TINYLLAMA_JWKS_URL"] = jwks_path(keys_dir).resolve().as_uri()
        env["TINYLLAMA_JWT_ISSUER"] = DEV_ISSUER
        env["TINYLLAMA_JWT_CLIENT_IDS"] = DEV_CLIENT_ID
    env.setdefault("PYTHONUNBUFFERED", "1")
    # The gateway starts the worker on demand and stops it when idle, like the GPU fleet in AWS.
    env.setdefault("TINYLLAMA_FLEET", "local")
    return env


def _call(url: str, *, token: str, method: str = "GET") -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    request = urllib.request.Request(url, method=method, headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        return json.loads(response.read())


def _wait_ready(url: str, *, processes: list[subprocess.Popen[bytes]], timeout_s: float) -> dict:
    """Wait for /ready (with an on-demand fleet it is 200 before any worker runs)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args[-1]} exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/ready", timeout=5) as response:  # noqa: S310
                return json.loads(response.read())
        except OSError:  # HTTPError (503) included: not ready yet
            time.sleep(0.5)
    raise RuntimeError(f"not ready after {timeout_s:.0f} s")


def _wait_warm(
    url: str, *, token: str, processes: list[subprocess.Popen[bytes]], timeout_s: float
) -> dict:
    """Start the fleet (the local worker) and wait until its model is loaded and warm."""
    deadline = time.monotonic() + timeout_s
    started = False
    last = "gateway not answering yet"
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args[-1]} exited with code {process.returncode}")
        try:
            if not started:
                _call(url + "/gpu/start", token=token, method="POST")
                started = True
            gpu = _call(url + "/gpu", token=token)
            if gpu.get("workers_ready"):
                with urllib.request.urlopen(url + "/ready", timeout=5) as response:  # noqa: S310
                    return json.loads(response.read())
            last = f"fleet {gpu.get('state')}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"not ready after {timeout_s:.0f} s: {last}")


def _interrupt(signum: int, frame: object) -> None:
    """SIGINT and SIGTERM both mean "stop everything": one exception, one clean-up path."""
    raise KeyboardInterrupt


def _install_signal_handlers() -> None:
    """Our own handlers, even when the parent started us with SIGINT ignored (``make up &``)."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


def _descendants() -> list[object]:
    """Every live process below this one (orphans included: we are their subreaper)."""
    try:
        import psutil
    except ImportError:  # a bare install: the direct children are all we know of
        return []
    try:
        return [p for p in psutil.Process().children(recursive=True) if p.is_running()]
    except psutil.Error:
        return []


def _stop(processes: list[subprocess.Popen[bytes]], *, grace_s: float = 8.0) -> None:
    """SIGTERM what we started (the gateway stops its worker), then sweep what is left.

    Runs with both signals ignored, so a second Ctrl-C cannot cut the clean-up short
    and leave a worker behind.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    deadline = time.monotonic() + grace_s
    for process in processes:  # in order: the gateway drains its worker while Redis still runs
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _say(f"{process.args[-1]} did not stop in {grace_s:.0f} s: killing it")
            process.kill()
            process.wait()
    leftovers = _descendants()
    for child in leftovers:
        with contextlib.suppress(Exception):
            child.terminate()
    if leftovers:
        import psutil

        _, alive = psutil.wait_procs(leftovers, timeout=2)
        for child in alive:
            with contextlib.suppress(Exception):
                child.kill()
        psutil.wait_procs(alive, timeout=2)


def _serve(environ: dict[str, str], *, owned: list[subprocess.Popen[bytes]]) -> int:
    """Start Redis (if needed) and the gateway, print how to call it, run until one exits.

    Every process started is appended to ``owned`` at once, so the caller's clean-up
    stops it whatever interrupts this function.
    """
    require_local(environ.get("TINYLLAMA_ENV", "local"))
    redis_url, redis_process = find_redis(environ.get("REDIS_URL"))
    if redis_process is not None:
        owned.append(redis_process)
    _say(f"redis: {redis_url}" + (" (started here)" if redis_process else ""))
    keys_dir = Path(environ.get("TINYLLAMA_DEV_KEYS", "~/.cache/tinyllama/dev-keys")).expanduser()
    # An operator's issuer (TINYLLAMA_JWKS_URL set) is passed through: then no dev key is minted.
    key = None if environ.get("TINYLLAMA_JWKS_URL") else ensure_dev_key(keys_dir)
    env = build_env(environ, redis_url=redis_url, keys_dir=keys_dir)
    port = env["TINYLLAMA_PORT"]
    base = f"http://127.0.0.1:{port}"
    _say(
        "starting the gateway, which starts the worker (online it fetches TinyLlama; "
        "offline it serves SmolLM2-135M-Instruct, converted once on the first run)"
    )
    gateway = subprocess.Popen([sys.executable, "-m", "services.gateway"], env=env)
    owned.insert(0, gateway)  # stopped first: it drains and stops the worker it started
    processes = [gateway]
    if key is None:
        ready = _wait_ready(base, processes=processes, timeout_s=600)
        issuer = env.get("TINYLLAMA_JWT_ISSUER", "your issuer")
        _say(f"ready on {base} ({ready.get('reason')}); tokens come from {issuer}")
        print(f"\nexport TINYLLAMA_URL={base}")
        print("export TINYLLAMA_TOKEN=<an access token from your issuer>\n")
    else:
        admin = mint_token(key, subject="make-up", scopes=("tinyllama/admin",), ttl_s=600)
        ready = _wait_warm(base, token=admin, processes=processes, timeout_s=600)
        token = mint_token(key, subject="dev", ttl_s=12 * 3600)
        _say(f"ready: model {ready.get('model')} on {base}")
        print(f"\nexport TINYLLAMA_URL={base}")
        print(f"export TINYLLAMA_TOKEN={token}\n")
    print(
        f'curl -s {base}/infer -H "Authorization: Bearer $TINYLLAMA_TOKEN" '
        "-H 'Content-Type: application/json' "
        '-d \'{"prompt": "What is the capital of France?", "chat": true, "max_new_tokens": 32}\'\n',
        flush=True,
    )
    _say(
        "the worker stops after 5 idle minutes and starts again on the next request; "
        "Ctrl-C stops everything"
    )
    while all(p.poll() is None for p in processes):
        time.sleep(0.5)
    _say("a service exited; stopping the rest")
    return 1


def main() -> int:
    """Run the local stack until Ctrl-C, SIGINT or SIGTERM; then stop all of it."""
    _install_signal_handlers()
    become_subreaper()
    owned: list[subprocess.Popen[bytes]] = []
    try:
        return _serve(dict(os.environ), owned=owned)
    except KeyboardInterrupt:
        _say("stopping...")
        return 0
    except (NoRedisError, NotLocalError) as exc:
        print(f"[make up] {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"[make up] {exc}", file=sys.stderr)
        return 1
    finally:
        _stop(owned)
        _say("stopped")


if __name__ == "__main__":
    sys.exit(main())
