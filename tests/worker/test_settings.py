"""The worker's own settings: what the environment may set, and what it may not."""

from __future__ import annotations

import pytest

from services.worker.settings import load_settings

NO_REGISTRY = {"TINYLLAMA_REGISTRY_FILE": "/nonexistent"}


def test_delivery_timeout_comes_from_the_environment():
    """TINYLLAMA_DELIVERY_TIMEOUT sets how long a job's events may wait for Redis."""
    assert load_settings(NO_REGISTRY).delivery_timeout_s == 30.0
    assert (
        load_settings({**NO_REGISTRY, "TINYLLAMA_DELIVERY_TIMEOUT": "2.5"}).delivery_timeout_s
        == 2.5
    )


def test_a_delivery_timeout_of_zero_is_refused():
    """Zero would fail every job at its first event: refused at start-up, naming the variable."""
    with pytest.raises(ValueError, match="TINYLLAMA_DELIVERY_TIMEOUT"):
        load_settings({**NO_REGISTRY, "TINYLLAMA_DELIVERY_TIMEOUT": "0"})


def test_engine_is_auto_by_default_and_validated():
    """TINYLLAMA_ENGINE takes auto, static or transformers; anything else names the choices."""
    assert load_settings(NO_REGISTRY).engine == "auto"
    assert load_settings({**NO_REGISTRY, "TINYLLAMA_ENGINE": "static"}).engine == "static"
    with pytest.raises(ValueError, match="TINYLLAMA_ENGINE must be one of auto, static"):
        load_settings({**NO_REGISTRY, "TINYLLAMA_ENGINE": "vllm"})
