"""Fixtures of the client tests: a Redis to stop and start, shared with the fault tests."""

from tests.faults.conftest import fault_redis  # noqa: F401
