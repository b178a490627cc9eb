"""The ``tinyllama`` CLI as a person uses it: plain messages that name what they tried."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys

from services.gateway.http.app import create_app
from tests.support import ROOT


async def _cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clients.cli",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode, out.decode(), err.decode()


async def test_an_unreachable_gateway_is_named_in_the_error():
    """A refused connection says which URL the CLI tried, in one line, without a traceback."""
    code, _, err = await _cli("infer", "hi", "--url", "http://127.0.0.1:9", "--token", "t")
    assert code == 1
    assert "cannot reach the gateway at http://127.0.0.1:9" in err
    assert "Traceback" not in err


async def test_an_api_error_names_the_url(gateway):
    """An HTTP error from the gateway names the URL that answered it."""
    url = str(gateway.make_url("")).rstrip("/")
    code, _, err = await _cli("gpu", "--url", url, "--token", "not-a-jwt")
    assert code == 1
    assert f"HTTP 401 from {url}/gpu" in err


async def test_cancelling_an_ended_job_says_so_plainly(gateway, make_token):
    """``job --cancel`` twice: first 'cancelled', then a plain 'had already finished' line."""
    url = str(gateway.make_url("")).rstrip("/")
    token = make_token("quitter")
    response = await gateway.post(
        "/infer?mode=async", json={"prompt": "x"}, headers={"Authorization": f"Bearer {token}"}
    )
    job_id = (await response.json())["id"]
    first = await _cli("job", job_id, "--cancel", "--url", url, "--token", token)
    second = await _cli("job", job_id, "--cancel", "--url", url, "--token", token)
    assert first[0] == 0
    assert first[1].strip() == f"job {job_id} cancelled"
    assert second[0] == 0  # nothing went wrong: there was nothing left to cancel
    assert second[1].strip() == f"job {job_id} had already finished"
    assert "Traceback" not in second[2]


async def test_infer_stream_names_its_job_and_ends_the_line(
    aiohttp_client, gateway_settings, make_token, redis
):
    """``infer --stream`` names its job on stderr, and its output ends with a newline even
    when the job fails (here: no worker, so it expires after a 1 s deadline)."""
    app = create_app(dataclasses.replace(gateway_settings, job_deadline_s=1.0))
    gateway = await aiohttp_client(app)
    url = str(gateway.make_url("")).rstrip("/")
    code, out, err = await asyncio.wait_for(
        _cli("infer", "hi", "--stream", "--url", url, "--token", make_token("streamer")),
        timeout=30,
    )
    assert code == 1
    assert "failed: no worker ran the job before its deadline" in err
    assert "tinyllama: job " in err  # named, so it can be looked up
    assert out.endswith("\n")


async def test_the_token_command_needs_no_login_extras(tmp_path):
    """``tinyllama token`` runs where authlib, keyring and requests are absent (the gateway
    image mints dev tokens with it): signing in imports them only when it is used."""
    script = (
        "import sys\n"
        "for name in ('authlib', 'keyring', 'requests', 'openai', 'tkinter'):\n"
        "    sys.modules[name] = None\n"
        "import runpy\n"
        "sys.argv = ['tinyllama', 'token', '--sub', 'image']\n"
        "runpy.run_module('clients.cli', run_name='__main__')\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        cwd=ROOT,
        env={**os.environ, "TINYLLAMA_DEV_KEYS": str(tmp_path / "keys"), "TINYLLAMA_ENV": "local"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert out.decode().count(".") == 2  # one JWT
