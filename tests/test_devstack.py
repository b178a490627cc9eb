"""`make up` and the dev identity: the two-command promise, tested for real."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.devstack.identity import NotLocalError, ensure_dev_key, require_local
from services.devstack.redis_server import free_port
from tests.support import ROOT, group_members, kill_group


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clients.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_token_command_refuses_outside_local(tmp_path):
    """`tinyllama token` exits 2 with a plain message when TINYLLAMA_ENV is not local."""
    env = {**os.environ, "TINYLLAMA_ENV": "prod", "TINYLLAMA_DEV_KEYS": str(tmp_path)}
    result = _cli("token", "--sub", "me", env=env)
    assert result.returncode == 2
    assert "local" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "signing-key.json").exists()


def test_token_command_prints_a_verifiable_jwt(tmp_path):
    """`tinyllama token --sub NAME` prints a JWT whose key is in the dev JWKS."""
    from joserfc import jwt
    from joserfc.jwk import KeySet

    env = {**os.environ, "TINYLLAMA_ENV": "local", "TINYLLAMA_DEV_KEYS": str(tmp_path)}
    result = _cli("token", "--sub", "ada", env=env)
    assert result.returncode == 0, result.stderr
    keys = KeySet.import_key_set(json.loads((tmp_path / "jwks.json").read_text()))
    claims = jwt.decode(result.stdout.strip(), keys, algorithms=["RS256"]).claims
    assert claims["sub"] == "ada"
    assert claims["token_use"] == "access"


def test_require_local_rejects_aws_environments():
    """dev/qa/prod are AWS environments: no dev tokens there."""
    for env in ("dev", "qa", "prod"):
        with pytest.raises(NotLocalError):
            require_local(env)


def test_dev_key_is_private_and_reused(tmp_path):
    """The dev signing key is created once, mode 0600, and reused afterwards."""
    first = ensure_dev_key(tmp_path)
    second = ensure_dev_key(tmp_path)
    assert first.kid == second.kid
    assert (tmp_path / "signing-key.json").stat().st_mode & 0o077 == 0


def test_cli_without_token_says_how_to_get_one(tmp_path):
    """`tinyllama infer` with no token explains what to do instead of a traceback."""
    env = {k: v for k, v in os.environ.items() if k != "TINYLLAMA_TOKEN"}
    result = _cli("infer", "hello", "--url", "http://127.0.0.1:9", env=env)
    assert result.returncode != 0
    assert "TINYLLAMA_TOKEN" in result.stderr


def _start_make_up(
    env: dict[str, str], tmp_path: Path, *, command: list[str] | None = None
) -> tuple[subprocess.Popen, Path]:
    """Run ``make up``'s program (or ``command``) in a group of its own, output to a file."""
    log = tmp_path / "up.log"
    process = subprocess.Popen(
        command or [sys.executable, "-m", "services.devstack"],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # pgid == pid: teardown can reach every process it started
    )
    return process, log


@contextlib.contextmanager
def _owned_group(process: subprocess.Popen) -> Iterator[None]:
    """On the way out, pass or fail, nothing of the group ``process`` leads survives."""
    try:
        yield
    finally:
        leftovers = kill_group(process.pid, grace_s=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        assert not leftovers, f"needed SIGKILL: {leftovers}"


def _interrupt_and_wait(process: subprocess.Popen, log: Path, *, timeout_s: float) -> int:
    """Ctrl-C as a terminal sends it (SIGINT to the whole group); wait for make up to exit."""
    os.killpg(process.pid, signal.SIGINT)
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"make up did not stop on Ctrl-C in {timeout_s} s: {log.read_text()[-2000:]}")


def _wait_for_curl(process: subprocess.Popen, log: Path, *, timeout_s: float) -> str:
    """Wait until make up printed its curl line; return everything it printed."""
    deadline = time.monotonic() + timeout_s
    output = ""
    while time.monotonic() < deadline and "curl -s" not in output:
        assert process.poll() is None, log.read_text()
        time.sleep(0.2)
        output = log.read_text()
    assert "curl -s" in output, f"no curl line after {timeout_s} s: {output[-2000:]}"
    return output


def _make_up_env(tmp_path: Path, *, redis_url: str, cache_dir: Path) -> dict[str, str]:
    """A developer's shell, pointed at an empty test Redis, the test cache and a free port."""
    from redis import Redis

    with Redis.from_url(redis_url) as client:  # no fleet state left by an earlier stack
        client.flushdb()
    env = {
        **os.environ,
        "TINYLLAMA_PORT": str(free_port()),
        "TINYLLAMA_DEV_KEYS": str(tmp_path / "keys"),
        "TINYLLAMA_CACHE_DIR": str(cache_dir),
        "REDIS_URL": redis_url,
        "HF_HUB_OFFLINE": "1",
        "TINYLLAMA_THREADS": "1",
        "TINYLLAMA_LOG_LEVEL": "WARNING",
    }
    for name in ("TINYLLAMA_JWKS_URL", "TINYLLAMA_MODEL", "TINYLLAMA_ENV"):
        env.pop(name, None)
    return env


@pytest.mark.slow
def test_make_up_prints_a_curl_that_returns_a_real_answer(
    tmp_path, redis_url, cache_dir, smollm2_model_path
):
    """`make up` offline serves SmolLM2-135M-Instruct (never the demo); its curl gets "Paris"."""
    env = _make_up_env(tmp_path, redis_url=redis_url, cache_dir=cache_dir)
    process, log = _start_make_up(env, tmp_path)
    with _owned_group(process):
        output = _wait_for_curl(process, log, timeout_s=180)
        token = re.search(r"export TINYLLAMA_TOKEN=(\S+)", output).group(1)
        # The CLI finds the stack on any port: make up says where it is.
        assert f"export TINYLLAMA_URL=http://127.0.0.1:{env['TINYLLAMA_PORT']}" in output
        curl = re.search(r"^curl -s .*$", output, re.MULTILINE).group(0)
        assert "serving SmolLM2-135M-Instruct" in output  # the offline fallback, said aloud
        assert "ready: model SmolLM2-135M-Instruct" in output
        result = subprocess.run(
            ["bash", "-c", curl],
            env={**env, "TINYLLAMA_TOKEN": token},
            capture_output=True,
            text=True,
            timeout=60,
        )
        job = json.loads(result.stdout)
        assert job["status"] == "succeeded", result.stdout
        assert job["result"]["model"] == "SmolLM2-135M-Instruct"
        assert "Paris" in job["result"]["text"], job["result"]
        code = _interrupt_and_wait(process, log, timeout_s=40)
    assert code == 0, shlex.quote(log.read_text()[-2000:])


@pytest.mark.slow
def test_make_up_started_with_sigint_ignored_stops_on_kill_int(
    tmp_path, redis_url, cache_dir, smollm2_model_path
):
    """`(trap '' INT; exec make up) &` stops, every process of it, on kill -INT to its group."""
    env = _make_up_env(tmp_path, redis_url=redis_url, cache_dir=cache_dir)
    # make up's own recipe with the interpreter running these tests (no venv rebuild).
    make_up = f"make --no-print-directory -o .venv/.installed up PY={shlex.quote(sys.executable)}"
    command = ["bash", "-c", f"trap '' INT; exec {make_up}"]
    process, log = _start_make_up(env, tmp_path, command=command)
    with _owned_group(process):
        _wait_for_curl(process, log, timeout_s=180)
        started = {p.pid for p in group_members(process.pid)}
        assert len(started) >= 3, "make, make up and the gateway at least"
        os.killpg(process.pid, signal.SIGINT)
        deadline = time.monotonic() + 10
        while group_members(process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
            process.poll()  # reap make itself
        left = [" ".join(p.cmdline()) for p in group_members(process.pid)]
        assert not left, f"still running 10 s after kill -INT: {left}\n{log.read_text()[-2000:]}"
    assert process.returncode == 0, log.read_text()[-2000:]
    assert "[make up] stopped" in log.read_text()


@pytest.mark.slow
def test_make_up_passes_an_operator_issuer_through(tmp_path, redis_url, cache_dir, signing_key):
    """With TINYLLAMA_JWKS_URL set, make up mints no dev key and the gateway trusts that issuer."""
    import urllib.request

    from services.devstack.identity import mint_token

    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [signing_key.as_dict(private=False)]}))
    env = {
        **_make_up_env(tmp_path, redis_url=redis_url, cache_dir=cache_dir),
        "TINYLLAMA_JWKS_URL": jwks.as_uri(),
        "TINYLLAMA_JWT_ISSUER": "https://corp.example",
        "TINYLLAMA_JWT_CLIENT_IDS": "corp-cli",
    }
    port = env["TINYLLAMA_PORT"]
    process, log = _start_make_up(env, tmp_path)
    with _owned_group(process):
        output = _wait_for_curl(process, log, timeout_s=120)
        assert "<an access token from your issuer>" in output
        assert not (tmp_path / "keys").exists()
        token = mint_token(
            signing_key, subject="corp-user", issuer="https://corp.example", client_id="corp-cli"
        )
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/gpu", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            assert json.loads(response.read())["backend"] == "local"
        assert _interrupt_and_wait(process, log, timeout_s=40) == 0


def test_tinyllama_registry_delegates_to_the_registry_cli(tmp_path):
    """`tinyllama registry ...` is the registry CLI: put then get through the file backend."""
    env = {**os.environ, "TINYLLAMA_REGISTRY_FILE": str(tmp_path / "reg.json")}
    put = _cli("registry", "--env", "dev", "put", "model/id", "demo", env=env)
    assert put.returncode == 0, put.stderr
    got = _cli("registry", "--env", "dev", "get", "model/id", env=env)
    assert got.stdout.strip() == "demo"
    missing = _cli("registry", "--env", "dev", "get", "nope/key", env=env)
    assert missing.returncode == 2
    assert "/tinyllama/dev/nope/key" in missing.stderr


async def test_cli_reads_gpu_and_usage_and_refuses_stop_without_scope(gateway, make_token):
    """`tinyllama gpu`/`usage` print JSON; `gpu stop` without the admin scope fails plainly."""
    import asyncio

    url = str(gateway.make_url("")).rstrip("/")

    async def cli(*args: str, token: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "clients.cli",
            *args,
            "--url",
            url,
            "--token",
            token,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        return process.returncode, out.decode(), err.decode()

    code, out, _ = await cli("gpu", token=make_token("viewer"))
    assert code == 0
    assert json.loads(out)["state"] == "stopped"
    code, out, _ = await cli("usage", token=make_token("viewer"))
    assert json.loads(out)["subject"] == "viewer"
    code, _, err = await cli("gpu", "stop", token=make_token("viewer"))
    assert code == 1
    assert "HTTP 403" in err
    assert "Traceback" not in err
