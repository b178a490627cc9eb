"""Operator routes: the GPU fleet, usage and cost, Prometheus metrics."""

from __future__ import annotations

import time

from aiohttp import web

from services.gateway import fleet, jobs
from services.gateway.auth import ForbiddenError, Principal
from services.gateway.budget import budget_problem, read_state_budget
from services.gateway.metrics import CONTENT_TYPE
from services.gateway.problems import Problem
from services.gateway.readiness import live_workers
from services.gateway.routes import json_response
from services.gateway.state import STATE, GatewayState
from services.gateway.usage import (
    all_subjects,
    cost_of,
    gpu_seconds,
    read_totals,
    subject_usage,
)
from services.gateway.views import BudgetView, GpuResponse, UsageResponse
from services.protocol.periods import day_label, month_label

routes = web.RouteTableDef()


async def _admin(request: web.Request, state: GatewayState) -> Principal:
    principal = await state.authenticator.authenticate(request.headers.get("Authorization"))
    if not principal.has_scope(state.settings.admin_scope):
        raise ForbiddenError(state.settings.admin_scope)
    return principal


async def gpu_view(state: GatewayState) -> GpuResponse:
    """The fleet's state, workers and idle deadline, now."""
    view = await fleet.read_fleet(state.redis)
    workers = await live_workers(state.redis, max_age_s=state.settings.heartbeat_max_age_s)
    fleet_state = view.state
    if state.settings.fleet == "none":
        fleet_state = "ready" if any(w.ready for w in workers) else "stopped"
    now = time.time()
    return GpuResponse(
        state=fleet_state,
        backend=state.fleet_backend.name,
        instance_type=state.settings.gpu_instance_type,
        hourly_price_usd=state.settings.gpu_hourly_price_usd,
        workers_ready=sum(1 for w in workers if w.ready),
        workers_live=len(workers),
        active_jobs=sum(w.active_jobs for w in workers),
        queue_depth=await jobs.queue_depth(state.redis, queue_name=state.settings.queue_name),
        idle_until=view.idle_until,
        idle_left_s=round(max(0.0, view.idle_until - now), 1) if fleet_state == "ready" else 0.0,
        reason=view.reason,
        changed_at=view.changed_at,
    )


@routes.get("/gpu")
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
async def start_gpu(request: web.Request) -> web.Response:
    """Operator: start the fleet now (warm for the default idle period)."""
    state = request.app[STATE]
    await _admin(request, state)
    _needs_controller(state)
    budget = await read_state_budget(state)
    if budget.status == "exhausted":
        raise budget_problem(budget)
    await fleet.request_start(state.redis, idle_minutes=5, unit_s=state.settings.idle_unit_s)
    return json_response(await gpu_view(state), status=202)


@routes.post("/gpu/stop")
async def stop_gpu(request: web.Request) -> web.Response:
    """Operator: drain running jobs (bounded) and stop; queued jobs wait or expire."""
    state = request.app[STATE]
    await _admin(request, state)
    _needs_controller(state)
    await fleet.request_stop(state.redis)
    return json_response(await gpu_view(state), status=202)


@routes.get("/usage")
async def get_usage(request: web.Request) -> web.Response:
    """The caller's jobs, tokens and cost today and this month; operators see everyone."""
    state = request.app[STATE]
    principal = await state.authenticator.authenticate(request.headers.get("Authorization"))
    price = state.settings.gpu_hourly_price_usd
    now = time.time()
    today, month = await subject_usage(state.redis, subject=principal.subject, now=now, price=price)
    budget = await read_state_budget(state)
    body = UsageResponse(
        subject=principal.subject,
        today=today,
        month=month,
        budget=BudgetView(
            month_to_date_usd=budget.month_to_date_usd,
            warn_usd=budget.warn_usd,
            hard_stop_usd=budget.hard_stop_usd,
            status=budget.status,
        ),
    )
    if principal.has_scope(state.settings.admin_scope):
        seconds = await gpu_seconds(state.redis, period=month_label(now))
        body = UsageResponse(
            subject=body.subject,
            today=today,
            month=month,
            budget=body.budget,
            environment_today=await read_totals(
                state.redis, scope="env", period=day_label(now), price=price
            ),
            environment_month=await read_totals(
                state.redis, scope="env", period=month_label(now), price=price
            ),
            gpu_seconds_month=round(seconds, 3),
            gpu_cost_month_usd=cost_of(seconds, hourly_price_usd=price),
            subjects=await all_subjects(state.redis, now=now, price=price),
        )
    headers = (
        {"X-Budget-Warning": "passed the warning threshold"}
        if (budget.status == "warning")
        else None
    )
    return json_response(body, headers=headers)


@routes.get("/metrics")
async def get_metrics(request: web.Request) -> web.Response:
    """Prometheus text format (scrape from inside the network; no auth)."""
    state = request.app[STATE]
    m = state.metrics
    now = time.time()
    price = state.settings.gpu_hourly_price_usd
    gpu = await gpu_view(state)
    env_month = await read_totals(state.redis, scope="env", period=month_label(now), price=price)
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
