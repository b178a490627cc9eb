"""How the fleet is started and stopped: a local worker process, or an ECS service.

One interface, two backends. Both block only in threads (``to_thread``):
boto3 and ``Popen.wait`` never run on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from services.protocol.aws import aws_client

log = logging.getLogger("tinyllama.gateway.fleet")


class FleetBackend(Protocol):
    """Starts and stops the GPU workers."""

    name: str

    async def start(self) -> None:
        """Ask for the workers to run (returns once asked, not once ready)."""

    async def stop(self) -> None:
        """Drain and stop the workers, within a bounded time."""

    async def is_running(self) -> bool:
        """True while any worker is (or is being) started."""

    async def close(self) -> None:
        """The gateway is shutting down: release what this process owns."""


class NoFleet:
    """Workers run on their own (compose, a fixed fleet): nothing to start or stop."""

    name = "none"

    async def start(self) -> None:
        """Nothing to do."""

    async def stop(self) -> None:
        """Nothing to do."""

    async def is_running(self) -> bool:
        """Unknown: assume yes, readiness comes from heartbeats."""
        return True

    async def close(self) -> None:
        """Nothing to do."""


class LocalFleet:
    """One worker process on this machine (``make up``)."""

    name = "local"

    def __init__(
        self,
        *,
        command: Sequence[str] | None = None,
        environ: Mapping[str, str] | None = None,
        drain_timeout_s: float = 30.0,
    ) -> None:
        self._command = list(command or [sys.executable, "-m", "services.worker"])
        self._environ = dict(environ if environ is not None else os.environ)
        self._drain_timeout_s = drain_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The worker's pid while it runs."""
        return self._process.pid if self._process and self._process.poll() is None else None

    async def start(self) -> None:
        """Start the worker process unless it runs already."""
        if self._process is not None and self._process.poll() is None:
            return
        log.info("starting local worker", extra={"command": " ".join(self._command)})
        self._process = await asyncio.to_thread(subprocess.Popen, self._command, env=self._environ)

    async def stop(self) -> None:
        """SIGTERM (the worker drains), then SIGKILL after the drain timeout."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, self._drain_timeout_s + 5)
        except subprocess.TimeoutExpired:
            log.warning("local worker did not drain in time: killing it")
            process.kill()
            await asyncio.to_thread(process.wait)

    async def is_running(self) -> bool:
        """True while the process lives."""
        return self._process is not None and self._process.poll() is None

    async def close(self) -> None:
        """A laptop worker never outlives the gateway that started it."""
        await self.stop()


class EcsFleet:
    """The GPU worker ECS service: desired count 0 or N (its capacity provider follows)."""

    name = "aws"

    def __init__(self, *, cluster: str, service: str, desired: int = 1, client: Any = None) -> None:
        self.cluster = cluster
        self.service = service
        self.desired = desired
        self._client = client

    def _ecs(self) -> Any:
        if self._client is None:
            self._client = aws_client("ecs")
        return self._client

    def _set_desired(self, count: int) -> None:
        self._ecs().update_service(cluster=self.cluster, service=self.service, desiredCount=count)

    async def start(self) -> None:
        """Set the service's desired count to N."""
        await asyncio.to_thread(self._set_desired, self.desired)

    async def stop(self) -> None:
        """Set the desired count to 0; ECS sends SIGTERM and the worker drains."""
        await asyncio.to_thread(self._set_desired, 0)

    def _counts(self) -> tuple[int, int]:
        reply = self._ecs().describe_services(cluster=self.cluster, services=[self.service])
        services = reply.get("services") or []
        if not services:
            return 0, 0
        return int(services[0].get("desiredCount", 0)), int(services[0].get("runningCount", 0))

    async def is_running(self) -> bool:
        """True while the service wants or runs tasks."""
        desired, running = await asyncio.to_thread(self._counts)
        return desired > 0 or running > 0

    async def close(self) -> None:
        """The service outlives this gateway: another replica's controller takes over."""
