"""Per-subject token buckets in Redis: the rate limit holds across gateway replicas.

The bucket is taken inside the admission script (``jobs.store``), so this module
owns the bucket's key and fields as a Lua function that script builds on.
"""

from __future__ import annotations

import dataclasses

from services.protocol import names
from services.protocol.scripts import lua_string

_TOKENS = "tokens"
_AT = "at"


@dataclasses.dataclass(frozen=True, kw_only=True)
class RateLimit:
    """A token bucket: ``rate`` per second, ``burst`` at most, per subject."""

    rate: float
    burst: float


def bucket_key(subject: str) -> str:
    """The token bucket of one subject."""
    return f"{names.KEY_PREFIX}:rate:{subject}"


# take_token(bucket, rate, burst, now): nil when a token was taken, else the seconds to wait.
RATE_LUA = f"""
local function take_token(bucket, rate, burst, now)
  rate = tonumber(rate)
  if bucket == '' or rate <= 0 then return nil end
  burst = tonumber(burst)
  now = tonumber(now)
  local held = redis.call('HMGET', bucket, {lua_string(_TOKENS)}, {lua_string(_AT)})
  local tokens = tonumber(held[1]) or burst
  local at = tonumber(held[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
  if tokens < 1 then return tostring((1 - tokens) / rate) end
  redis.call('HSET', bucket, {lua_string(_TOKENS)}, tostring(tokens - 1),
    {lua_string(_AT)}, tostring(now))
  redis.call('EXPIRE', bucket, math.ceil(burst / rate) + 1)
  return nil
end
"""
