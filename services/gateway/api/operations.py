"""Operations: probes, the GPU fleet, usage and cost, Prometheus metrics."""

from __future__ import annotations

import time

from aiohttp import web
from redis.exceptions import RedisError

from services.gateway.api.bodies import (
    BudgetView,
    GpuResponse,
    HealthResponse,
    ReadyResponse,
    UsageResponse,
    worker_view,
)
from services.gateway.auth import ForbiddenError, Principal
from services.gateway.billing.budget import BudgetExhausted
from services.gateway.billing.store import (
    all_subjects,
    cost_of,
    gpu_seconds,
    read_totals,
    subject_usage,
)
from services.gateway.fleet.observe import live_workers
from services.gateway.http.openapi import Reply, operation
from services.gateway.http.problems import Problem, json_response
from services.gateway.http.state import STATE, GatewayState
from services.gateway.metrics import CONTENT_TYPE
from services.protocol import names
from services.protocol.periods import day_label, month_label

routes = web.RouteTableDef()
OPERATOR_START_IDLE_MINUTES = 5


async def _admin(request: web.Request, state: GatewayState) -> Principal:
    principal = await state.authenticator.authenticate(request.headers.get("Authorization"))
    if not principal.is_admin:  # the admin scope or a configured admin group
        raise ForbiddenError(state.settings.admin_scope)
    return principal


@routes.get("/health")
@operation(
    operation_id="getHealth",
    summary="Liveness: the process answers",
    tag="operations",
    auth=False,
    replies={200: Reply(description="The process is alive.", body=HealthResponse)},
)
async def health(request: web.Request) -> web.Response:
    """Liveness: answers while the process runs, touching nothing else."""
    return json_response(HealthResponse(status="ok", env=request.app[STATE].settings.env))


@routes.get("/ready")
@operation(
    operation_id="getReady",
    summary="Readiness: Redis answers and a worker with a loaded model is alive",
    tag="operations",
    auth=False,
    replies={
        200: Reply(description="Ready: work can flow.", body=ReadyResponse),
        503: Reply(description="Not ready; `reason` says why.", body=ReadyResponse),
    },
)
async def ready(request: web.Request) -> web.Response:
    """Readiness: Redis answers and a worker with a loaded model sent a heartbeat recently."""
    state = request.app[STATE]
    now = time.time()
    try:
        beats = await live_workers(
            state.redis, max_age_s=state.settings.heartbeat_max_age_s, now=now
        )
        depth = await state.jobs.store.depth()
        fleet_state = (await state.fleet.read()).state
    except (RedisError, OSError) as exc:
        body = ReadyResponse(
            ready=False,
            reason=f"redis unreachable: {type(exc).__name__}",
            model=None,
            queue_depth=0,
            workers=[],
        )
        return json_response(body, status=503)
    workers = [worker_view(b, now=now) for b in beats]
    loaded = [w for w in workers if w.ready]
    if loaded:
        body = ReadyResponse(
            ready=True, reason="ok", model=loaded[0].model, queue_depth=depth, workers=workers
        )
        return json_response(body)
    if state.settings.fleet != "none":
        # No warm worker, but the gateway can start one: work can flow (it waits `starting`).
        body = ReadyResponse(
            ready=True,
            reason=f"fleet {fleet_state}: GPU workers start on demand",
            model=None,
            queue_depth=depth,
            workers=workers,
        )
        return json_response(body)
    reason = "worker is loading its model" if workers else "no worker heartbeat seen recently"
    body = ReadyResponse(ready=False, reason=reason, model=None, queue_depth=depth, workers=workers)
    return json_response(body, status=503)


async def gpu_view(state: GatewayState) -> GpuResponse:
    """The fleet's state, workers and idle deadline, now."""
    view = await state.fleet.read()
    now = time.time()
    workers = await live_workers(state.redis, max_age_s=state.settings.heartbeat_max_age_s)
    fleet_state = view.state
    if state.settings.fleet == "none":
        fleet_state = "ready" if any(w.ready for w in workers) else "stopped"
    return GpuResponse(
        state=fleet_state,
        backend=state.fleet_backend.name,
        instance_type=state.settings.gpu_instance_type,
        hourly_price_usd=state.settings.gpu_hourly_price_usd,
        workers_ready=sum(1 for w in workers if w.ready),
        workers_live=len(workers),
        active_jobs=sum(w.active_jobs for w in workers),
        queue_depth=await state.jobs.store.depth(),
        idle_until=view.idle_until,
        idle_left_s=round(max(0.0, view.idle_until - now), 1) if fleet_state == "ready" else 0.0,
        reason=view.reason,
        changed_at=view.changed_at,
    )


@routes.get("/gpu")
@operation(
    operation_id="getGpu",
    summary="GPU fleet: state, instance type, hourly price, workers, idle time left",
    tag="operations",
    replies={200: Reply(description="The fleet now.", body=GpuResponse)},
    problems=(401,),
)
async def get_gpu(request: web.Request) -> web.Response:
    """Fleet state, instance type, hourly price, workers, time left before the idle stop."""
    state = request.app[STATE]
    await state.authenticator.authenticate(request.headers.get("Authorization"))
    return json_response(await gpu_view(state))


def _needs_controller(state: GatewayState) -> None:
    if state.settings.fleet == "none":
        raise Problem(
            409,
            "no-fleet-control",
            "This deployment does not control its GPUs",
            detail="TINYLLAMA_FLEET is 'none': workers are started outside the gateway",
        )


@routes.post("/gpu/start")
@operation(
    operation_id="startGpu",
    summary="Operator: start the fleet now (admin scope)",
    tag="operations",
    replies={202: Reply(description="Start requested; the fleet as it is now.", body=GpuResponse)},
    problems=(401, 402, 403, 409),
)
async def start_gpu(request: web.Request) -> web.Response:
    """Operator: start the fleet now (warm for the default idle period), whatever its state."""
    state = request.app[STATE]
    await _admin(request, state)
    _needs_controller(state)
    budget = await state.budget.read()
    if budget.status == "exhausted":
        raise BudgetExhausted(budget)
    idle = OPERATOR_START_IDLE_MINUTES * state.settings.idle_unit_s
    await state.fleet.start(idle_deadline=time.time() + idle)
    return json_response(await gpu_view(state), status=202)


@routes.post("/gpu/stop")
@operation(
    operation_id="stopGpu",
    summary="Operator: drain running jobs and stop the fleet (admin scope)",
    tag="operations",
    replies={202: Reply(description="Stop requested; the fleet as it is now.", body=GpuResponse)},
    problems=(401, 403, 409),
)
async def stop_gpu(request: web.Request) -> web.Response:
    """Operator: drain running jobs (bounded) and stop; jobs still queued fail, not restart it."""
    state = request.app[STATE]
    await _admin(request, state)
    _needs_controller(state)
    await state.fleet.stop()
    return json_response(await gpu_view(state), status=202)


@routes.get("/usage")
@operation(
    operation_id="getUsage",
    summary="The caller's jobs, tokens and cost today and this month (operators: everyone)",
    tag="operations",
    replies={
        200: Reply(
            description="Usage and budget; the environment-wide fields for operators only.",
            body=UsageResponse,
            headers=("X-Budget-Warning",),
        )
    },
    problems=(401,),
)
async def get_usage(request: web.Request) -> web.Response:
    """The caller's jobs, tokens and cost today and this month; operators see everyone."""
    state = request.app[STATE]
    principal = await state.authenticator.authenticate(request.headers.get("Authorization"))
    price = state.settings.gpu_hourly_price_usd
    now = time.time()
    today, month = await subject_usage(state.redis, subject=principal.subject, now=now, price=price)
    budget = await state.budget.read()
    budget_view = BudgetView(
        month_to_date_usd=budget.month_to_date_usd,
        warn_usd=budget.warn_usd,
        hard_stop_usd=budget.hard_stop_usd,
        status=budget.status,
    )
    body = UsageResponse(subject=principal.subject, today=today, month=month, budget=budget_view)
    if principal.is_admin:
        seconds = await gpu_seconds(state.redis, period=month_label(now))
        body = UsageResponse(
            subject=principal.subject,
            today=today,
            month=month,
            budget=budget_view,
            environment_today=await read_totals(
                state.redis, scope=names.ENV_SCOPE, period=day_label(now), price=price
            ),
            environment_month=await read_totals(
                state.redis, scope=names.ENV_SCOPE, period=month_label(now), price=price
            ),
            gpu_seconds_month=round(seconds, 3),
            gpu_cost_month_usd=cost_of(seconds, hourly_price_usd=price),
            subjects=await all_subjects(state.redis, now=now, price=price),
        )
    headers = (
        {"X-Budget-Warning": "passed the warning threshold"} if budget.status == "warning" else None
    )
    return json_response(body, headers=headers)


@routes.get("/metrics")
@operation(
    operation_id="getMetrics",
    summary="Prometheus metrics (text exposition format 0.0.4; scrape from inside the network)",
    tag="operations",
    auth=False,
    replies={
        200: Reply(
            description="Prometheus text format.",
            media={"text/plain": {"schema": {"type": "string"}}},
        )
    },
    problems=(404,),
)
async def get_metrics(request: web.Request) -> web.Response:
    """Prometheus text format (scrape from inside the network; no auth).

    The public load balancer refuses ``/metrics`` by rule, and a request it forwards
    anyway (a percent-encoded path slips past path rules) carries its
    ``X-Forwarded-For``: such a request is a 404 here. Scrapers reach a task directly.
    """
    if "X-Forwarded-For" in request.headers:
        raise Problem(404, "not-found", "Not found")
    state = request.app[STATE]
    m = state.metrics
    now = time.time()
    price = state.settings.gpu_hourly_price_usd
    gpu = await gpu_view(state)
    env_month = await read_totals(
        state.redis, scope=names.ENV_SCOPE, period=month_label(now), price=price
    )
    seconds = await gpu_seconds(state.redis, period=month_label(now))
    workers = await live_workers(state.redis, max_age_s=state.settings.heartbeat_max_age_s)
    capacity = sum(w.capacity for w in workers if w.ready)
    m.queue_depth.set(gpu.queue_depth)
    m.workers_ready.set(gpu.workers_ready)
    m.batch_occupancy.set(gpu.active_jobs / capacity if capacity else 0.0)
    m.set_fleet_state(gpu.state)
    m.prompt_tokens.set(env_month.prompt_tokens)
    m.generation_tokens.set(env_month.completion_tokens)
    m.jobs.set(env_month.jobs)
    m.gpu_seconds.set(round(seconds, 3))
    m.cost.set(cost_of(seconds, hourly_price_usd=price))
    m.budget_hard_stop.set(state.settings.budget_hard_stop_usd)
    return web.Response(body=m.render(), headers={"Content-Type": CONTENT_TYPE})
