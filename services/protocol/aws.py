"""boto3 clients with timeouts a control loop can live with.

botocore's defaults (60 s connect and read, legacy retries) let one slow AWS call
hold the fleet loop, or a metrics thread, for minutes. Every client here gives up
on a connect after 3 s and on a read after 10 s, with standard retries.
"""

from __future__ import annotations

from typing import Any

CONNECT_TIMEOUT_S = 3
READ_TIMEOUT_S = 10


def aws_client(service: str, **kwargs: Any) -> Any:
    """A boto3 client for ``service`` with explicit connect and read timeouts."""
    import boto3  # imported on use: only AWS deployments need it
    from botocore.config import Config

    config = Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"max_attempts": 3, "mode": "standard"},
    )
    return boto3.client(service, config=config, **kwargs)
