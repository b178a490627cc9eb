"""``python -m services.gateway``: serve the gateway until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Mapping

from services.gateway.fleet.backends import AwsFleet, FleetBackend, LocalFleet, NoFleet
from services.gateway.http.app import create_app
from services.gateway.http.server import serve
from services.gateway.settings import GatewaySettings, load_settings
from services.protocol.logs import configure_logging
from services.protocol.process import reset_signals


def build_backend(settings: GatewaySettings, *, environ: Mapping[str, str]) -> FleetBackend:
    """The fleet backend the settings name; the local one starts workers with our environment."""
    if settings.fleet == "local":
        return LocalFleet(environ=environ)
    if settings.fleet == "aws":
        return AwsFleet(
            cluster=settings.gpu_cluster,
            service=settings.gpu_service,
            auto_scaling_group=settings.gpu_auto_scaling_group,
            desired=settings.gpu_workers,
            drain_timeout_s=settings.gpu_drain_timeout_s,
        )
    return NoFleet()


def main() -> int:
    """Load settings from the environment and run the app (keep-alive outlives the ALB's)."""
    reset_signals()  # run_app then handles SIGINT and SIGTERM, even if our parent ignored them
    configure_logging(level=os.environ.get("TINYLLAMA_LOG_LEVEL", "INFO"))
    try:
        settings = load_settings(os.environ)
    except ValueError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.getLogger("tinyllama.gateway").info(
        "starting gateway",
        extra={"host": settings.host, "port": settings.port, "env": settings.env},
    )
    try:
        import uvloop  # the event loop in C: a large share of a gateway's CPU is the loop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    app = create_app(settings, fleet_backend=build_backend(settings, environ=os.environ))
    asyncio.run(
        serve(
            app,
            host=settings.host,
            port=settings.port,
            header_timeout_s=settings.header_timeout_s,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
