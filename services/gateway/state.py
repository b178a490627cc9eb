"""What the handlers share: settings and live resources, under one typed app key."""

from __future__ import annotations

import dataclasses

from aiohttp import web
from redis.asyncio import Redis

from services.gateway.admission import Admission
from services.gateway.auth import Authenticator
from services.gateway.fleet import FleetController
from services.gateway.fleet_backends import FleetBackend
from services.gateway.metrics import GatewayMetrics
from services.gateway.settings import GatewaySettings
from services.gateway.usage import Budget


@dataclasses.dataclass(kw_only=True)
class GatewayState:
    """Settings plus the resources the cleanup contexts opened."""

    settings: GatewaySettings
    redis: Redis
    authenticator: Authenticator
    admission: Admission
    metrics: GatewayMetrics
    fleet_backend: FleetBackend
    controller: FleetController | None = None
    budget_cache: tuple[float, Budget] | None = None  # (monotonic time, budget)


STATE: web.AppKey[GatewayState] = web.AppKey("state", GatewayState)
SETTINGS: web.AppKey[GatewaySettings] = web.AppKey("settings", GatewaySettings)
BACKEND: web.AppKey[FleetBackend] = web.AppKey("fleet_backend", object)
