"""The AWS fleet backend and the backlog metric, against moto's HTTP server through boto3.

moto (5.2) stores a warm pool's configuration and lifecycle hooks, but launches
and terminates instances directly: it has no Warmed:Stopped instances and does
not implement CompleteLifecycleAction. So these tests pin the API calls the
backend makes and the state it reads back (desired capacity, instances, task
counts); what AWS does with a warm pool is in cdk/README.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from services.gateway.billing.budget import BudgetGate
from services.gateway.fleet.backends import AwsFleet
from services.gateway.fleet.backlog import publish_backlog
from services.gateway.fleet.controller import build_controller
from services.gateway.fleet.store import FleetStore
from services.gateway.jobs.store import JobStore


@pytest.fixture
def aws(aws_environ, moto_endpoint, monkeypatch):
    """Every AWS client (ECS, CloudWatch) goes to the moto server on loopback."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    return aws_environ


@pytest.fixture
def gpu_service(aws):
    """An ECS cluster with a GPU worker service scaled to zero."""
    ecs = boto3.client("ecs")
    cluster = "tinyllama-test-gpu"
    ecs.create_cluster(clusterName=cluster)
    ecs.register_task_definition(
        family="worker",
        containerDefinitions=[
            {
                "name": "worker",
                "image": "worker:latest",
                "memory": 512,
                "resourceRequirements": [{"type": "GPU", "value": "1"}],
            }
        ],
    )
    ecs.create_service(
        cluster=cluster, serviceName="worker", taskDefinition="worker", desiredCount=0
    )
    return ecs, cluster, "worker"


@pytest.fixture
def gpu_hosts(aws):
    """An Auto Scaling group of GPU hosts at 0 with a warm pool of stopped instances."""
    name = f"tinyllama-test-gpu-hosts-{uuid.uuid4().hex[:8]}"  # moto lives for the session
    ec2 = boto3.client("ec2")
    autoscaling = boto3.client("autoscaling")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    ec2.create_launch_template(
        LaunchTemplateName=name,
        LaunchTemplateData={"ImageId": image, "InstanceType": "g4dn.xlarge"},
    )
    zone = ec2.describe_availability_zones()["AvailabilityZones"][0]["ZoneName"]
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateName": name},
        MinSize=0,
        MaxSize=1,
        DesiredCapacity=0,
        AvailabilityZones=[zone],
    )
    autoscaling.put_warm_pool(AutoScalingGroupName=name, PoolState="Stopped", MinSize=0)
    return autoscaling, name


def _group(autoscaling, name: str) -> dict:
    return autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])[
        "AutoScalingGroups"
    ][0]


def _uncached(gpu_service, gpu_hosts) -> AwsFleet:
    """A backend on the fixtures' own clients that reads AWS on every status call."""
    ecs, cluster, service = gpu_service
    autoscaling, group = gpu_hosts
    return AwsFleet(
        cluster=cluster,
        service=service,
        auto_scaling_group=group,
        ecs=ecs,
        autoscaling=autoscaling,
        cache_s=0,
    )


def _desired(ecs, cluster: str, service: str) -> int:
    return ecs.describe_services(cluster=cluster, services=[service])["services"][0]["desiredCount"]


async def test_ecs_backend_scales_the_service(gpu_service):
    """Without a host group, start sets the worker service's desired count to N, stop to 0."""
    ecs, cluster, service = gpu_service
    backend = AwsFleet(cluster=cluster, service=service, desired=2)
    assert not await backend.is_running()
    await backend.start()
    assert _desired(ecs, cluster, service) == 2
    assert await backend.is_running()
    await backend.stop()
    assert _desired(ecs, cluster, service) == 0


async def test_start_takes_hosts_from_the_group_and_asks_ecs_for_tasks(gpu_service, gpu_hosts):
    """start sets the group's desired capacity and the service's desired count, no cool-down."""
    ecs, cluster, service = gpu_service
    autoscaling, group = gpu_hosts
    backend = AwsFleet(cluster=cluster, service=service, auto_scaling_group=group)
    assert not await backend.is_running()
    await backend.start()
    assert _group(autoscaling, group)["DesiredCapacity"] == 1
    assert _desired(ecs, cluster, service) == 1
    assert await backend.is_running()  # the start invalidates what was seen before it
    warm = autoscaling.describe_warm_pool(AutoScalingGroupName=group)["WarmPoolConfiguration"]
    assert warm["PoolState"] == "Stopped"


async def test_stop_drains_the_service_then_scales_the_hosts_in(gpu_service, gpu_hosts):
    """stop sets the service to 0 first, then the group to 0; the fleet then reads as stopped."""
    ecs, cluster, service = gpu_service
    autoscaling, group = gpu_hosts
    calls: list[str] = []
    for client in (ecs, autoscaling):
        client.meta.events.register("before-call.*.*", lambda model, **_: calls.append(model.name))
    backend = _uncached(gpu_service, gpu_hosts)
    await backend.start()
    calls.clear()
    await backend.stop()
    assert calls.index("UpdateService") < calls.index("DescribeServices")
    assert calls.index("DescribeServices") < calls.index("SetDesiredCapacity")
    assert _desired(ecs, cluster, service) == 0
    assert _group(autoscaling, group)["DesiredCapacity"] == 0
    assert not await backend.is_running()


async def test_stop_gives_up_waiting_for_a_stuck_task(gpu_service, gpu_hosts):
    """A task that does not exit holds the hosts at most drain_timeout_s: billing still stops."""
    ecs, cluster, service = gpu_service
    autoscaling, group = gpu_hosts

    class StuckTask:
        """The real ECS client, except that one task never leaves RUNNING."""

        def __getattr__(self, name):
            return getattr(ecs, name)

        def describe_services(self, **kwargs):
            reply = ecs.describe_services(**kwargs)
            reply["services"][0]["runningCount"] = 1
            return reply

    backend = AwsFleet(
        cluster=cluster,
        service=service,
        auto_scaling_group=group,
        ecs=StuckTask(),
        drain_timeout_s=0.3,
        poll_s=0.05,
    )
    await backend.start()
    started = time.monotonic()
    await backend.stop()
    assert time.monotonic() - started < 2
    assert _group(autoscaling, group)["DesiredCapacity"] == 0


def _controller(redis, backend, settings):
    jobs = JobStore(redis, queue_name=settings.queue_name, ttl_s=60)
    budget = BudgetGate(redis, hourly_price_usd=1.0, warn_usd=0, hard_stop_usd=0)
    fleet = FleetStore(redis)
    controller = build_controller(
        fleet=fleet, jobs=jobs, backend=backend, budget=budget, settings=settings
    )
    return controller, fleet


async def test_controller_starts_the_ecs_service_for_a_waiting_job(
    gpu_service, redis, gateway_settings
):
    """A wanted, stopped fleet makes the controller call UpdateService (desired 1)."""
    ecs, cluster, service = gpu_service
    settings = dataclasses.replace(
        gateway_settings, fleet="aws", gpu_cluster=cluster, gpu_service=service
    )
    controller, fleet = _controller(redis, AwsFleet(cluster=cluster, service=service), settings)
    await fleet.start(idle_deadline=time.time() + 300)
    decision = await controller.tick()
    assert decision.action == "start"
    assert _desired(ecs, cluster, service) == 1
    assert (await fleet.read()).state == "starting"
    await fleet.stop()
    await controller.tick()
    assert _desired(ecs, cluster, service) == 0
    assert (await fleet.read()).state == "stopped"


async def test_only_one_controller_acts(gpu_service, redis, gateway_settings):
    """Two gateway replicas: the one holding the Redis lock acts, the other does not."""
    ecs, cluster, service = gpu_service
    backend = AwsFleet(cluster=cluster, service=service)
    first, fleet = _controller(redis, backend, gateway_settings)
    second, _ = _controller(redis, backend, gateway_settings)
    await first.tick()
    await fleet.start(idle_deadline=time.time() + 300)
    assert await second.tick() is None
    assert not second.is_leader
    assert _desired(ecs, cluster, service) == 0


async def test_backlog_reaches_cloudwatch(aws, redis, gateway_settings, make_token, gateway):
    """The queue depth is published as TinyLlama/QueueDepth{Environment} for the autoscaler."""
    for i in range(3):
        await gateway.post(
            "/infer?mode=async",
            json={"prompt": f"p{i}"},
            headers={"Authorization": f"Bearer {make_token(f'u{i}')}"},
        )
    settings = dataclasses.replace(gateway_settings, env="backlogtest")
    cloudwatch = boto3.client("cloudwatch")
    jobs = JobStore(redis, queue_name=settings.queue_name, ttl_s=60)
    task = asyncio.create_task(publish_backlog(jobs, env=settings.env, period_s=0.05))
    try:
        for _ in range(100):
            metrics = cloudwatch.list_metrics(Namespace="TinyLlama")["Metrics"]
            if any(m["MetricName"] == "QueueDepth" for m in metrics):
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
    depth = [m for m in metrics if m["MetricName"] == "QueueDepth"]
    assert depth[0]["Dimensions"] == [{"Name": "Environment", "Value": "backlogtest"}]


async def _metrics_of(cloudwatch, *, env: str, wanted: set[str]) -> list[dict]:
    """The TinyLlama metrics of environment ``env``, once ``wanted`` are all there (or 5 s)."""
    for _ in range(100):
        found = [
            m
            for m in cloudwatch.list_metrics(Namespace="TinyLlama")["Metrics"]
            if m["Dimensions"][:1] == [{"Name": "Environment", "Value": env}]
        ]
        if wanted <= {m["MetricName"] for m in found}:
            break
        await asyncio.sleep(0.05)
    return found


async def test_fleet_state_and_month_cost_reach_cloudwatch(aws, redis, gateway_settings):
    """With the fleet store, the sample adds FleetState, MonthGpuSeconds and MonthToDateCostUsd."""
    jobs = JobStore(redis, queue_name=gateway_settings.queue_name, ttl_s=60)
    fleet = FleetStore(redis)
    await fleet.start(idle_deadline=time.time() + 300)  # a start asked for: "starting"
    cloudwatch = boto3.client("cloudwatch")
    task = asyncio.create_task(
        publish_backlog(jobs, env="costtest", period_s=0.05, fleet=fleet, hourly_price_usd=3.6)
    )
    wanted = {"FleetState", "MonthGpuSeconds", "MonthToDateCostUsd"}
    try:
        found = await _metrics_of(cloudwatch, env="costtest", wanted=wanted)
    finally:
        task.cancel()
    assert wanted <= {m["MetricName"] for m in found}


async def test_worker_publishes_the_minutes_jobs(aws):
    """Jobs by outcome, TTFT and end-to-end values and tokens go out with the heartbeat."""
    from services.protocol.messages import GenerateResult, Timings, Usage
    from services.worker.heartbeat import publish_heartbeat_metric
    from services.worker.metrics import WorkerMetrics

    metrics = WorkerMetrics()
    result = GenerateResult(
        text="hi",
        finish_reason="stop",
        model="demo",
        usage=Usage(prompt_tokens=3, completion_tokens=5, total_tokens=8),
        timings=Timings(queued_s=0.1, first_token_s=0.25, generation_s=0.5, total_s=0.7),
    )
    metrics.observe_result(result)
    metrics.observe_failure("too_long")
    ready = asyncio.Event()
    ready.set()
    cloudwatch = boto3.client("cloudwatch")
    task = asyncio.create_task(
        publish_heartbeat_metric(env="minutetest", ready=ready, period_s=0.05, metrics=metrics)
    )
    wanted = {"Jobs", "TimeToFirstTokenSeconds", "EndToEndLatencySeconds", "GeneratedTokens"}
    try:
        found = await _metrics_of(cloudwatch, env="minutetest", wanted=wanted)
    finally:
        task.cancel()
    assert wanted <= {m["MetricName"] for m in found}
    outcomes = {d["Value"] for m in found if m["MetricName"] == "Jobs" for d in m["Dimensions"][1:]}
    assert outcomes == {"stop", "too_long"}
    assert metrics.drain_minute().outcomes == {}  # sent once, not again


async def test_worker_heartbeat_reaches_cloudwatch(aws):
    """A warm worker publishes TinyLlama/WorkerHeartbeat{Environment} for the silence alarm."""
    from services.worker.heartbeat import publish_heartbeat_metric

    ready = asyncio.Event()
    ready.set()
    cloudwatch = boto3.client("cloudwatch")
    task = asyncio.create_task(publish_heartbeat_metric(env="beattest", ready=ready, period_s=0.05))
    try:
        for _ in range(100):
            metrics = cloudwatch.list_metrics(
                Namespace="TinyLlama",
                MetricName="WorkerHeartbeat",
                Dimensions=[{"Name": "Environment", "Value": "beattest"}],
            )["Metrics"]
            if metrics:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
    assert metrics[0]["Dimensions"] == [{"Name": "Environment", "Value": "beattest"}]


def _throttle(client, operation: str) -> None:
    """Make every ``operation`` call of this (real) client fail as AWS throttling does."""

    def refuse(**_):
        body = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
        return AWSResponse("https://throttled.invalid", 400, {}, None), {
            **body,
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }

    client.meta.events.register(f"before-call.*.{operation}", refuse)


async def test_a_describe_outage_neither_blocks_a_stop_nor_fails_the_status(gpu_service, gpu_hosts):
    """DescribeServices throttled: stop still scales the hosts in; status is the last seen."""
    ecs, cluster, service = gpu_service
    autoscaling, group = gpu_hosts
    backend = _uncached(gpu_service, gpu_hosts)
    await backend.start()
    assert await backend.is_running()
    _throttle(ecs, "DescribeServices")
    assert await backend.is_running()  # what was last seen, not an exception
    await backend.stop()
    assert _group(autoscaling, group)["DesiredCapacity"] == 0  # billing stops anyway
    assert _desired_unthrottled(cluster, service) == 0


def _desired_unthrottled(cluster: str, service: str) -> int:
    return _desired(boto3.client("ecs"), cluster, service)
