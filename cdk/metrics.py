"""Custom CloudWatch metric names shared by the alarms and the scaling policies.

The gateway publishes the queue metrics and the worker its heartbeat, each once a
minute, with the dimension ``Environment=<env>``. The names are declared once, in
``services/protocol/telemetry.py``, which the services publish with.
"""

from __future__ import annotations

from services.protocol.telemetry import (
    CLOUDWATCH_DIMENSION as DIMENSION,
)
from services.protocol.telemetry import (
    CLOUDWATCH_NAMESPACE as NAMESPACE,
)
from services.protocol.telemetry import (
    QUEUE_DEPTH,
    QUEUE_OLDEST_AGE,
    WORKER_HEARTBEAT,
)

__all__ = ["DIMENSION", "NAMESPACE", "QUEUE_DEPTH", "QUEUE_OLDEST_AGE", "WORKER_HEARTBEAT"]
