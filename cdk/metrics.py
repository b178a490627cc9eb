"""Custom CloudWatch metric names shared by the alarms and the scaling policies.

The gateway publishes the queue metrics and the worker its heartbeat, each
once a minute, with the dimension ``Environment=<env>``. The services must
use these exact names (they belong in ``services/protocol`` once it exists).
"""

from __future__ import annotations

NAMESPACE = "TinyLlama"
DIMENSION = "Environment"

QUEUE_DEPTH = "QueueDepth"  # jobs queued or running (Maximum per minute)
QUEUE_OLDEST_AGE = "QueueOldestJobAgeSeconds"  # age of the oldest queued job
WORKER_HEARTBEAT = "WorkerHeartbeat"  # 1 per live worker per minute
