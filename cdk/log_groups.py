"""Log groups: every one the app creates has a retention and a removal policy."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs
from constructs import Construct

_RETENTIONS: dict[int, logs.RetentionDays] = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
}


def retention_days(days: int) -> logs.RetentionDays:
    """Return the CloudWatch retention for ``days``; fail on values not offered."""
    try:
        return _RETENTIONS[days]
    except KeyError:
        choices = sorted(_RETENTIONS)
        raise ValueError(f"log retention {days} days: choose one of {choices}") from None


def create_log_group(
    scope: Construct, construct_id: str, *, days: int, removal_policy: RemovalPolicy
) -> logs.LogGroup:
    """Create a log group that expires its events after ``days``."""
    return logs.LogGroup(
        scope, construct_id, retention=retention_days(days), removal_policy=removal_policy
    )
