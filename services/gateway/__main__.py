"""``python -m services.gateway``: serve the gateway until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import os
import sys

from aiohttp import web

from services.gateway.app import create_app
from services.gateway.settings import load_settings
from services.protocol.logs import configure_logging


def main() -> int:
    """Load settings from the environment and run the app (keep-alive outlives an ALB's 60 s)."""
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
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=None,
        keepalive_timeout=75,
        reuse_port=True,
        print=None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
