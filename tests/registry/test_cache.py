"""``TtlCache``: least-recently-used eviction plus expiry after a TTL."""

from __future__ import annotations

import pytest

from services.registry import TtlCache
from tests.registry.support import FakeClock


def test_entry_expires_after_ttl(clock: FakeClock) -> None:
    """An entry is returned until its TTL passes, then it is gone."""
    cache: TtlCache[str, str] = TtlCache(ttl=10, clock=clock)
    cache.put("k", "v")

    clock.advance(9.9)
    assert cache.get("k") == "v"
    clock.advance(0.1)
    assert cache.get("k") is None
    assert len(cache) == 0


def test_least_recently_used_entry_is_evicted(clock: FakeClock) -> None:
    """When full, the entry read least recently goes first."""
    cache: TtlCache[str, int] = TtlCache(max_entries=2, clock=clock)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.get("a")

    cache.put("c", 3)

    assert cache.get("a") == 1
    assert cache.get("b") is None
    assert cache.get("c") == 3


def test_discard_drops_matching_entries(clock: FakeClock) -> None:
    """discard() removes only the entries whose key matches the predicate."""
    cache: TtlCache[tuple[str, str], int] = TtlCache(clock=clock)
    cache.put(("dev", "a"), 1)
    cache.put(("qa", "a"), 2)

    assert cache.discard(lambda key: key[0] == "dev") == 1

    assert cache.get(("dev", "a")) is None
    assert cache.get(("qa", "a")) == 2


@pytest.mark.parametrize(("max_entries", "ttl"), [(0, 1.0), (1, -1.0)])
def test_nonsense_limits_are_refused(max_entries: int, ttl: float) -> None:
    """A cache that could hold nothing, or a negative TTL, is refused."""
    with pytest.raises(ValueError):
        TtlCache(max_entries=max_entries, ttl=ttl)
