"""How the fleet is started and stopped: a local worker process, or GPU hosts on AWS.

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
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

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


class AwsFleet:
    """GPU hosts from an Auto Scaling warm pool, and the ECS worker service on them.

    Start asks for both at once: the group's desired capacity (a *stopped*
    instance leaves the warm pool: boot, no image pull, model already on its
    volume) and the service's desired count (ECS places the task as soon as
    the instance's agent registers). Stop drains first (desired count 0: ECS
    sends SIGTERM and the worker re-queues what it held), waits a bounded time
    for the task to go, then sets the group's desired capacity to 0: the
    instance terminates and stops billing (ECS does not support returning
    instances to a warm pool), and the pool prepares a stopped replacement in
    the background. No managed-scaling
    cool-down sits on either path. Without a group name only the service is
    scaled (ECS managed scaling then follows, on its own schedule).
    """

    name = "aws"

    def __init__(
        self,
        *,
        cluster: str,
        service: str,
        auto_scaling_group: str = "",
        desired: int = 1,
        drain_timeout_s: float = 8.0,
        poll_s: float = 0.5,
        cache_s: float = 2.0,
        ecs: Any = None,
        autoscaling: Any = None,
    ) -> None:
        self.cluster = cluster
        self.service = service
        self.auto_scaling_group = auto_scaling_group
        self.desired = desired
        self._drain_timeout_s = drain_timeout_s
        self._poll_s = poll_s
        self._cache_s = cache_s  # the controller asks every tick: spare the AWS APIs
        self._ecs_client = ecs
        self._autoscaling_client = autoscaling
        self._seen: tuple[float, bool] | None = None

    def _ecs(self) -> Any:
        if self._ecs_client is None:
            self._ecs_client = aws_client("ecs")
        return self._ecs_client

    def _autoscaling(self) -> Any:
        if self._autoscaling_client is None:
            self._autoscaling_client = aws_client("autoscaling")
        return self._autoscaling_client

    def _set_service(self, count: int) -> None:
        self._ecs().update_service(cluster=self.cluster, service=self.service, desiredCount=count)

    def _set_hosts(self, count: int) -> None:
        if self.auto_scaling_group:
            self._autoscaling().set_desired_capacity(
                AutoScalingGroupName=self.auto_scaling_group,
                DesiredCapacity=count,
                HonorCooldown=False,  # an explicit start or stop, not a scaling policy
            )

    def _service_counts(self) -> tuple[int, int]:
        reply = self._ecs().describe_services(cluster=self.cluster, services=[self.service])
        services = reply.get("services") or []
        if not services:
            return 0, 0
        return int(services[0].get("desiredCount", 0)), int(services[0].get("runningCount", 0))

    def _hosts(self) -> tuple[int, int]:
        """(desired capacity, instances in service or on their way) of the group."""
        if not self.auto_scaling_group:
            return 0, 0
        reply = self._autoscaling().describe_auto_scaling_groups(
            AutoScalingGroupNames=[self.auto_scaling_group]
        )
        groups = reply.get("AutoScalingGroups") or []
        if not groups:
            return 0, 0
        live = [
            i
            for i in groups[0].get("Instances", [])
            if not str(i.get("LifecycleState", "")).startswith(("Warmed", "Terminat"))
        ]
        return int(groups[0].get("DesiredCapacity", 0)), len(live)

    def _start(self) -> None:
        self._seen = None
        self._set_hosts(self.desired)
        self._set_service(self.desired)

    def _stop(self) -> None:
        self._seen = None
        self._set_service(0)
        deadline = time.monotonic() + self._drain_timeout_s
        try:
            while self._service_counts()[1] > 0 and time.monotonic() < deadline:
                time.sleep(self._poll_s)
        except (BotoCoreError, ClientError) as exc:  # throttled, or the API is down
            log.warning("fleet stop: could not watch the drain (%s); stopping the hosts", exc)
        # Drained, or out of patience: stopping the host SIGTERMs what is left anyway.
        self._set_hosts(0)

    def _running(self) -> bool:
        now = time.monotonic()
        if self._seen is not None and now - self._seen[0] < self._cache_s:
            return self._seen[1]
        try:
            desired, running = self._service_counts()
            host_desired, hosts = self._hosts()
        except (BotoCoreError, ClientError) as exc:
            # Throttled, or the API is down: an error here would fail the controller's whole
            # tick, and with it every stop. Assume what was last seen (running, if nothing).
            log.warning("fleet status unknown (%s): assuming it is unchanged", exc)
            return True if self._seen is None else self._seen[1]
        result = desired > 0 or running > 0 or host_desired > 0 or hosts > 0
        self._seen = (now, result)
        return result

    async def start(self) -> None:
        """Take N hosts out of the warm pool and ask ECS for N worker tasks."""
        await asyncio.to_thread(self._start)

    async def stop(self) -> None:
        """Drain the worker tasks (bounded), then scale the hosts in."""
        await asyncio.to_thread(self._stop)

    async def is_running(self) -> bool:
        """True while the service wants or runs tasks, or a host is (or is being) started."""
        return await asyncio.to_thread(self._running)

    async def close(self) -> None:
        """The fleet outlives this gateway: another replica's controller takes over."""
