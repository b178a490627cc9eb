"""Find a Redis for local runs, or start one."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from urllib.parse import urlparse


class NoRedisError(Exception):
    """No Redis answers and none can be started."""


def redis_answers(url: str, *, timeout_s: float = 1.0) -> bool:
    """True if a Redis at ``url`` answers PING (a raw socket: no client library needed)."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as conn:
            if parsed.password:
                conn.sendall(f"AUTH {parsed.password}\r\n".encode())
                conn.recv(64)
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis_server() -> tuple[str, subprocess.Popen[bytes]]:
    """Start ``redis-server`` on a free loopback port, keeping nothing on disk."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise NoRedisError(
            "no Redis answers on localhost:6379 and redis-server is not on the PATH: "
            "install it (apt-get install redis-server / brew install redis) or set REDIS_URL"
        )
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="tinyllama-redis-")
    process = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if redis_answers(url):
            return url, process
        if process.poll() is not None:
            raise NoRedisError(f"redis-server exited with code {process.returncode}")
        time.sleep(0.05)
    process.kill()
    raise NoRedisError("redis-server did not answer within 10 s")


def find_redis(explicit: str | None) -> tuple[str, subprocess.Popen[bytes] | None]:
    """``REDIS_URL`` if given (it must answer), else localhost:6379, else a new redis-server."""
    if explicit:
        if not redis_answers(explicit):
            raise NoRedisError(f"REDIS_URL={explicit} does not answer PING")
        return explicit, None
    local = "redis://127.0.0.1:6379/0"
    if redis_answers(local):
        return local, None
    return start_redis_server()
