"""CloudWatch datums as the services publish them: dimensions and per-job values."""

from __future__ import annotations

from services.protocol.fleet import STATES
from services.protocol.telemetry import (
    FLEET_STATE_CODES,
    TIME_TO_FIRST_TOKEN,
    cloudwatch_datum,
    cloudwatch_values,
)


def test_outcome_is_a_second_dimension_after_the_environment() -> None:
    """Jobs by outcome keep the Environment dimension the alarms and dashboard filter on."""
    datum = cloudwatch_datum(name="Jobs", env="dev", value=2.0, unit="Count", outcome="stop")
    assert datum["Dimensions"] == [
        {"Name": "Environment", "Value": "dev"},
        {"Name": "Outcome", "Value": "stop"},
    ]


def test_values_are_rounded_counted_and_split_at_150() -> None:
    """Per-job seconds become Values/Counts (raw data: CloudWatch computes percentiles)."""
    (datum,) = cloudwatch_values(name=TIME_TO_FIRST_TOKEN, env="dev", values=[0.1234, 0.121, 2.34])
    assert datum["Values"] == [0.12, 2.3]
    assert datum["Counts"] == [2.0, 1.0]
    many = cloudwatch_values(
        name=TIME_TO_FIRST_TOKEN, env="dev", values=[10.0 + i for i in range(400)]
    )
    assert [len(d["Values"]) for d in many] == [150, 150, 100]
    assert sum(sum(d["Counts"]) for d in many) == 400
    assert cloudwatch_values(name=TIME_TO_FIRST_TOKEN, env="dev", values=[]) == []


def test_fleet_state_codes_follow_the_state_machine() -> None:
    """FleetState's numbers index the fleet's states in their one declared order."""
    assert FLEET_STATE_CODES == STATES
