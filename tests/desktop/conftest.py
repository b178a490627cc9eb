"""The desktop suite's world: a real X server (Xvfb), Redis, gateway and GPU fleet, one Tk root."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import tkinter as tk
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clients.desktop.app import DesktopApp
from clients.desktop.config import DesktopSettings
from clients.desktop.keystore import SecretStore
from clients.desktop.tokens import ADMIN_SCOPE, EnvTokenSource
from services.devstack.identity import mint_token
from tests.conftest import CLIENT_ID, ISSUER
from tests.faults.stack import GatewayProcess, write_jwks
from tests.support import ROOT, RedisServer, kill_group, worker_env

ARTIFACTS = ROOT / "var" / "artifacts"


@pytest.fixture(scope="session")
def x_display() -> Iterator[str]:
    """A private Xvfb on a display number it picks itself; ``DISPLAY`` points at it."""
    if shutil.which("Xvfb") is None:
        pytest.fail("Xvfb is missing: apt-get install xvfb (.ci/run installs it)")
    read_fd, write_fd = os.pipe()
    process = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()
    if not number:
        process.kill()
        pytest.fail("Xvfb did not report a display number")
    display = f":{number}"
    previous = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = display
    yield display
    if previous is None:
        os.environ.pop("DISPLAY", None)
    else:
        os.environ["DISPLAY"] = previous
    kill_group(process.pid, grace_s=2.0)
    process.wait()


@pytest.fixture(scope="module")
def desktop_redis(tmp_path_factory) -> Iterator[RedisServer]:
    """A private Redis for this module's gateway and workers."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


# A tiny budget with a price that makes every metered GPU second cost 1 USD.
BUDGET = {
    "TINYLLAMA_GPU_HOURLY_PRICE": "3600",
    "TINYLLAMA_BUDGET_WARN_USD": "5000",
    "TINYLLAMA_BUDGET_HARD_STOP_USD": "9000",
}


@pytest.fixture(scope="module")
def service(
    request, tmp_path_factory, desktop_redis, signing_key, demo_model_path: Path, cache_dir: Path
) -> Iterator[GatewayProcess]:
    """A real gateway with ``TINYLLAMA_FLEET=local``: it starts and stops its own worker.

    The worker serves the fast demo model; refreshing the README's screenshot
    (``TINYLLAMA_UPDATE_SCREENSHOT=1``) serves SmolLM2, so the picture shows a real answer.
    """
    tmp = tmp_path_factory.mktemp("gateway")
    jwks = write_jwks(tmp / "jwks.json", [signing_key])
    model = demo_model_path
    if os.environ.get("TINYLLAMA_UPDATE_SCREENSHOT"):
        model = request.getfixturevalue("smollm2_model_path")
    workers = worker_env(
        redis_url=desktop_redis.url,
        model_path=model,
        cache_dir=cache_dir,
        TINYLLAMA_DRAIN_TIMEOUT="5",
        TINYLLAMA_LEASE="3",
    )
    overrides = {
        key: workers[key]
        for key in (
            "TINYLLAMA_MODEL",
            "TINYLLAMA_CACHE_DIR",
            "TINYLLAMA_THREADS",
            "TINYLLAMA_HEARTBEAT",
            "TINYLLAMA_METRICS_PORT",
            "TINYLLAMA_CACHE_TOKENS",
            "TINYLLAMA_DRAIN_TIMEOUT",
            "TINYLLAMA_LEASE",
        )
    }
    gateway = GatewayProcess.start_with(
        tmp,
        redis_url=desktop_redis.url,
        jwks_url=jwks,
        TINYLLAMA_FLEET="local",
        TINYLLAMA_IDLE_UNIT_S="12",
        TINYLLAMA_FLEET_TICK="0.2",
        TINYLLAMA_HEARTBEAT_MAX_AGE="3",
        TINYLLAMA_FLEET_START_TIMEOUT="120",
        **BUDGET,
        **overrides,
    )
    asyncio.run(gateway.ready())
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def admin_token(signing_key) -> str:
    """An operator's token (admin scope) from the test issuer."""
    return mint_token(
        signing_key, subject="ada", scopes=(ADMIN_SCOPE,), issuer=ISSUER, client_id=CLIENT_ID
    )


@pytest.fixture(scope="module")
def user_token(signing_key) -> str:
    """A plain user's token (no scopes)."""
    return mint_token(signing_key, subject="bob", issuer=ISSUER, client_id=CLIENT_ID)


@pytest.fixture
def open_app(x_display, service, tmp_path) -> Iterator[Callable[..., DesktopApp]]:
    """Open the real window against the gateway with a given token; closed afterwards."""
    opened: list[DesktopApp] = []

    def open_with(token: str) -> DesktopApp:
        folder = tmp_path / f"config-{len(opened)}"
        DesktopSettings(service_url=service.url, geometry="1180x620+0+0").save(folder)
        root = tk.Tk()
        app = DesktopApp(
            root,
            folder=folder,
            token_source=EnvTokenSource({"TINYLLAMA_TOKEN": token}),
            secrets=SecretStore(folder, use_keyring=False),
            gpu_poll_ms=250,
            cost_poll_ms=250,
        )
        app.start()
        opened.append(app)
        return app

    yield open_with
    for app in opened:
        app.close()


def pump(root: tk.Misc, condition: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    """Run Tk's event loop in this thread until ``condition()`` holds, or fail after a timeout."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        root.update()
        time.sleep(0.01)
