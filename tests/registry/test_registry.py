"""Behaviour of ``Registry`` on both backends (SSM over HTTP via moto, and a local file)."""

from __future__ import annotations

import logging
import math

import pytest

from services.registry import (
    InvalidNameError,
    MissingKeyError,
    Parameter,
    Registry,
    Secret,
    TtlCache,
)
from services.registry.values import parse_bool
from tests.registry.support import FakeClock, Harness


def test_get_returns_a_stored_string(registry: Registry) -> None:
    """A String parameter comes back as the same plain ``str``."""
    registry.put("queue/name", "arq:queue")

    assert registry.get("queue/name") == "arq:queue"
    assert type(registry.get("queue/name")) is str


def test_secure_string_round_trip_is_a_secret(registry: Registry) -> None:
    """A SecureString is stored secure, read decrypted, and returned as a ``Secret``."""
    registry.put("redis/password", "hunter2-very-secret", secure=True)
    registry.refresh()

    value = registry.get("redis/password")

    assert isinstance(value, Secret)
    assert value.reveal() == "hunter2-very-secret"
    assert registry.parameter("redis/password").secure


def test_secure_values_stay_out_of_repr(registry: Registry) -> None:
    """Neither the Secret, the Parameter, get_many's dict nor the Registry repr shows the value."""
    registry.put("redis/password", "hunter2-very-secret", secure=True)

    shown = " ".join(
        [
            repr(registry.get("redis/password")),
            str(registry.get("redis/password")),
            f"{registry.get('redis/password')}",
            repr(registry.parameter("redis/password")),
            repr(registry.get_many()),
            repr(registry),
        ]
    )

    assert "hunter2" not in shown
    assert "**********" in shown


def test_secure_values_stay_out_of_logs(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """The registry's own logging at DEBUG names paths and types but never secure values."""
    caplog.set_level(logging.DEBUG, logger="services.registry")
    registry.put("redis/password", "hunter2-very-secret", secure=True)
    registry.refresh()

    value = registry.get("redis/password")
    registry.get_many()
    logging.getLogger("services.registry.test").info("connecting with %s", value)

    assert registry.path("redis/password") in caplog.text
    assert "hunter2" not in caplog.text


def test_missing_key_names_path_and_environment(registry: Registry) -> None:
    """Reading an unset key raises MissingKeyError naming the full path and the environment."""
    with pytest.raises(MissingKeyError) as raised:
        registry.get("queue/name")

    message = str(raised.value)
    assert f"/tinyllama/{registry.env}/queue/name" in message
    assert repr(registry.env) in message
    assert raised.value.env == registry.env
    assert raised.value.path == f"/tinyllama/{registry.env}/queue/name"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("On", True),
        ("false", False),
        ("0", False),
        ("NO", False),
        ("off", False),
        (" true ", True),
    ],
)
def test_parse_bool_accepts_the_usual_words(text: str, expected: bool) -> None:
    """Settings read true/false/1/0/yes/no/on/off in any case (registry or environment)."""
    assert parse_bool(text) is expected


@pytest.mark.parametrize("text", ["maybe", "2", "y", "enabled", "tru"])
def test_parse_bool_refuses_anything_else(text: str) -> None:
    """Any other text raises ValueError naming the setting instead of guessing a boolean."""
    with pytest.raises(ValueError, match="TINYLLAMA_FLAG"):
        parse_bool(text, name="TINYLLAMA_FLAG")


def test_get_many_pages_through_more_than_ten_parameters(
    registry: Registry, harness: Harness
) -> None:
    """get_many over 23 keys returns them all from one paginated listing and no single reads."""
    for index in range(23):
        registry.put(f"bulk/item-{index:02d}", str(index), secure=index % 5 == 0)
    registry.refresh()
    harness.clear_calls()

    values = registry.get_many("bulk")

    assert len(values) == 23
    assert values["bulk/item-07"] == "7"
    assert isinstance(values["bulk/item-05"], Secret)
    assert values["bulk/item-05"].reveal() == "5"
    pages = math.ceil(23 / harness.page_size) if harness.page_size else 1
    assert harness.calls == [harness.list_call] * pages
    assert harness.read_call not in harness.calls


def test_get_many_answers_later_single_reads(registry: Registry, harness: Harness) -> None:
    """After get_many, get() of a listed key is served from the cache."""
    registry.put("queue/name", "arq:queue")
    registry.put("queue/max-depth", "5")
    registry.refresh()
    registry.get_many()
    harness.clear_calls()

    assert registry.get("queue/max-depth") == "5"
    assert harness.calls == []


def test_get_many_matches_whole_path_segments(registry: Registry) -> None:
    """A prefix selects keys below it, not keys that merely start with the same letters."""
    registry.put("queue/name", "q")
    registry.put("queue/max-depth", "5")
    registry.put("queueing/other", "x")

    assert set(registry.get_many("queue")) == {"queue/name", "queue/max-depth"}
    assert set(registry.get_many("queue/")) == {"queue/name", "queue/max-depth"}
    assert set(registry.get_many()) == {"queue/name", "queue/max-depth", "queueing/other"}


def test_environments_do_not_share_values(registry: Registry, env_name: str) -> None:
    """A registry of another environment on the same backend does not see these values."""
    other = registry.for_env(f"{env_name}-qa")
    registry.put("model/id", "dev-model")

    with pytest.raises(MissingKeyError, match=f"{env_name}-qa"):
        other.get("model/id")
    assert other.get_many() == {}


def test_shared_cache_is_keyed_by_environment(registry: Registry, env_name: str) -> None:
    """Switching environment on a shared cache never returns the other environment's value."""
    qa = registry.for_env(f"{env_name}-qa")
    registry.put("model/id", "dev-model")
    qa.put("model/id", "qa-model")

    assert registry.get("model/id") == "dev-model"  # now cached for dev
    assert qa.get("model/id") == "qa-model"
    assert registry.get("model/id") == "dev-model"
    assert qa.get_many() == {"model/id": "qa-model"}
    assert registry.get_many() == {"model/id": "dev-model"}


def test_cached_value_expires_after_ttl(
    registry: Registry, harness: Harness, clock: FakeClock, env_name: str
) -> None:
    """A value changed behind the registry's back is seen only once the TTL has passed."""
    registry.put("model/id", "old")
    assert registry.get("model/id") == "old"
    harness.backend.write(env_name, Parameter("model/id", "new"))

    clock.advance(59)
    assert registry.get("model/id") == "old"
    clock.advance(2)
    assert registry.get("model/id") == "new"


def test_refresh_drops_cached_values(registry: Registry, harness: Harness, env_name: str) -> None:
    """refresh() makes the next read go to the backend, before the TTL is up."""
    registry.put("model/id", "old")
    registry.get_many()
    harness.backend.write(env_name, Parameter("model/id", "new"))

    registry.refresh()

    assert registry.get("model/id") == "new"
    assert registry.get_many() == {"model/id": "new"}


def test_refresh_keeps_other_environments_cached(
    registry: Registry, harness: Harness, env_name: str
) -> None:
    """refresh() of one environment leaves another environment's cache entries alone."""
    qa = registry.for_env(f"{env_name}-qa")
    qa.put("model/id", "qa-model")
    qa.get("model/id")
    harness.clear_calls()

    registry.refresh()
    assert qa.get("model/id") == "qa-model"

    assert harness.calls == []


def test_put_overwrites_and_can_change_type(registry: Registry) -> None:
    """put() replaces a value and its type, and the next read sees the new one."""
    registry.put("redis/password", "plain")
    assert registry.get("redis/password") == "plain"

    registry.put("redis/password", "now-secret", secure=True)

    value = registry.get("redis/password")
    assert isinstance(value, Secret)
    assert value.reveal() == "now-secret"


def test_put_of_a_secret_stores_a_secure_string(registry: Registry) -> None:
    """Passing a Secret to put() stores a SecureString even without secure=True."""
    registry.put("redis/password", Secret("s3cr3t"))

    assert registry.parameter("redis/password").secure


def test_delete_removes_a_key(registry: Registry) -> None:
    """delete() removes the key; reading it afterwards raises MissingKeyError."""
    registry.put("model/id", "m")
    registry.get("model/id")

    registry.delete("model/id")

    with pytest.raises(MissingKeyError):
        registry.get("model/id")


def test_delete_of_a_missing_key_raises(registry: Registry) -> None:
    """Deleting an unset key raises MissingKeyError naming its path."""
    with pytest.raises(MissingKeyError, match=f"/tinyllama/{registry.env}/model/id"):
        registry.delete("model/id")


@pytest.mark.parametrize("key", ["", "/queue/name", "queue/", "queue//name", "queue name"])
def test_invalid_keys_are_refused(registry: Registry, key: str) -> None:
    """Keys that cannot form a parameter path raise InvalidNameError before any I/O."""
    with pytest.raises(InvalidNameError):
        registry.get(key)


def test_invalid_environment_names_are_refused(harness: Harness) -> None:
    """An environment name with slashes or capitals is refused up front."""
    with pytest.raises(InvalidNameError, match="environment"):
        Registry("dev/../prod", harness.backend)


def test_cache_is_bounded(harness: Harness, env_name: str) -> None:
    """With a tiny LRU, older keys are evicted and read again from the backend."""
    registry = Registry(env_name, harness.backend, cache=TtlCache(max_entries=2))
    for key in ("a", "b", "c"):
        registry.put(key, key)
        registry.get(key)
    harness.clear_calls()

    assert registry.get("c") == "c"
    assert harness.calls == []
    assert registry.get("a") == "a"
    assert harness.calls == [harness.read_call]
