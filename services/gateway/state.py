"""What the handlers share: settings and live resources, under one typed app key."""

from __future__ import annotations

import dataclasses

from aiohttp import web
from redis.asyncio import Redis

from services.gateway.admission import Admission
from services.gateway.auth import Authenticator
from services.gateway.settings import GatewaySettings


@dataclasses.dataclass(kw_only=True)
class GatewayState:
    """Settings plus the resources the cleanup contexts opened."""

    settings: GatewaySettings
    redis: Redis
    authenticator: Authenticator
    admission: Admission


STATE: web.AppKey[GatewayState] = web.AppKey("state", GatewayState)
SETTINGS: web.AppKey[GatewaySettings] = web.AppKey("settings", GatewaySettings)
