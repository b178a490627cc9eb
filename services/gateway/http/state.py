"""What the handlers share: settings and live resources, under one typed app key."""

from __future__ import annotations

import dataclasses

from aiohttp import web
from redis.asyncio import Redis

from services.gateway.auth import Authenticator
from services.gateway.billing.budget import BudgetGate
from services.gateway.fleet.backends import FleetBackend
from services.gateway.fleet.controller import FleetController
from services.gateway.fleet.store import FleetStore
from services.gateway.jobs.service import JobService
from services.gateway.metrics import GatewayMetrics
from services.gateway.settings import GatewaySettings


@dataclasses.dataclass(kw_only=True)
class GatewayState:
    """Settings plus the resources the cleanup contexts opened."""

    settings: GatewaySettings
    redis: Redis
    authenticator: Authenticator
    jobs: JobService
    fleet: FleetStore
    budget: BudgetGate
    metrics: GatewayMetrics
    fleet_backend: FleetBackend
    controller: FleetController | None = None


STATE: web.AppKey[GatewayState] = web.AppKey("state", GatewayState)
SETTINGS: web.AppKey[GatewaySettings] = web.AppKey("settings", GatewaySettings)
BACKEND: web.AppKey[FleetBackend] = web.AppKey("fleet_backend", object)
