"""The served model: read from live heartbeats, remembered in Redis for a fleet at zero."""

from __future__ import annotations

from services.gateway.fleet import served as served_module
from services.gateway.fleet.served import ServedModels, from_heartbeats
from services.protocol import names
from services.protocol.heartbeats import send_heartbeat, withdraw
from tests.support import live_heartbeat as _beat


def test_a_ready_workers_model_wins_and_its_largest_limits_apply():
    """Freshest first, ready preferred; the limits are the largest its workers report (the
    gateway refuses only what no worker could hold); other models' limits do not count."""
    beats = [
        _beat("loading", "new", ready=False, context_length=8192),
        _beat("a", "old", context_length=1024, max_token_chars=8),
        _beat("b", "old", context_length=2048),
    ]
    model = from_heartbeats(beats, since=5.0)
    assert model is not None
    assert (model.name, model.context_length, model.max_token_chars) == ("old", 2048, 8)
    assert from_heartbeats([], since=5.0) is None


async def test_the_last_served_model_is_remembered_with_its_first_sighting(redis):
    """With no live worker the model (and when it was first seen) is read back from Redis."""
    served = ServedModels(redis, max_age_s=5.0, clock=lambda: 100.0)
    assert (await served.read()).model is None
    await send_heartbeat(redis, _beat("w", "m", context_length=2048), ttl_s=60)
    warm = await served.read()
    await withdraw(redis, worker_id="w")
    cold = await ServedModels(redis, max_age_s=5.0).read()  # another replica, later
    assert (warm.live, cold.live) == (True, False)
    assert cold.model == warm.model
    assert (cold.model.name, cold.model.since, cold.model.context_length) == ("m", 100.0, 2048)


async def test_a_remembered_model_lost_from_redis_is_written_again(redis, monkeypatch):
    """Redis restarted without its data: the next look at a live worker stores it again."""
    monkeypatch.setattr(served_module, "RECHECK_S", 0.0)
    served = ServedModels(redis, max_age_s=5.0)
    await send_heartbeat(redis, _beat("w", "m"), ttl_s=60)
    await served.read()
    await redis.delete(names.SERVED_MODEL_KEY)
    await served.read()
    assert await redis.exists(names.SERVED_MODEL_KEY)
