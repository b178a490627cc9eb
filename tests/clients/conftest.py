"""Fixtures of the client tests: a Redis to stop and start, a worker, an auth server."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import requests

from clients.auth import LoginConfig
from services.devstack.redis_server import free_port
from tests.clients.auth_server import AuthServer, Client
from tests.conftest import CLIENT_ID, ISSUER
from tests.faults.conftest import fault_redis  # noqa: F401
from tests.test_end_to_end import ready_worker, worker  # noqa: F401  (a demo-model worker)

MACHINE_SECRET = "machine-secret"


@pytest.fixture
def auth_server(signing_key) -> Iterator[AuthServer]:
    """A Cognito-shaped authorization server on loopback, signing with the gateway's key."""
    server = AuthServer(signing_key, issuer=ISSUER, audience_client_id=CLIENT_ID)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def login_config(auth_server: AuthServer) -> LoginConfig:
    """Login settings for the test server: a desktop client on a free loopback port."""
    port = free_port()
    auth_server.clients["desktop"] = Client(
        "desktop", redirect_uris=(f"http://localhost:{port}/callback",)
    )
    auth_server.clients["machine"] = Client(
        "machine", secret=MACHINE_SECRET, scopes=("tinyllama/invoke", "tinyllama/admin")
    )
    return LoginConfig(
        domain=auth_server.url,
        client_id="desktop",
        redirect_port=port,
        machine_client_id="machine",
        client_secret=MACHINE_SECRET,
    )


def follow_redirects(url: str) -> None:
    """The 'browser': GET the authorize URL and follow its redirects to the loopback callback."""
    response = requests.get(url, allow_redirects=True, timeout=10)
    response.raise_for_status()


@pytest.fixture
def busy_port(login_config: LoginConfig) -> Iterator[int]:
    """The login port, held by someone else."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", login_config.redirect_port))
    holder.listen()
    yield login_config.redirect_port
    holder.close()
