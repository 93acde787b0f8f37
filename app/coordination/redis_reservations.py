"""The counted reservation in Redis, for a fleet: each step one Lua script, so a reservation
is admitted against every counter it names, or none, atomically (the contract and the other
stores: app.coordination.reservation)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis

from app.coordination.reservation import SETTLED_FOR, Claim, StoreUnavailable

__all__ = ["RedisReservations"]


def _redis_errors(fn: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc

    return call


# Per counter K: hash K (used, reserved), zset K:held (holder -> expiry), hash K:amounts
# (holder -> amount), zset K:settled (holders settled -> when; kept SETTLED_FOR seconds).
# Reserve: KEYS the counters; ARGV now, n, holder, expires, keep, then limit and amount per
# counter. Returns 0 when reserved, else the index (1-based) of the first counter without room.
_PURGE = """
local function purge(k, now)
  local gone = redis.call('zrangebyscore', k .. ':held', '-inf', now)
  for _, holder in ipairs(gone) do
    local amount = tonumber(redis.call('hget', k .. ':amounts', holder) or '0')
    redis.call('hincrbyfloat', k, 'reserved', -amount)
    redis.call('hdel', k .. ':amounts', holder)
    redis.call('zrem', k .. ':held', holder)
  end
end
local function keep(k, seconds)
  for _, name in ipairs({k, k .. ':held', k .. ':amounts', k .. ':settled'}) do
    redis.call('expire', name, seconds)
  end
end
"""
_RESERVE = (
    _PURGE
    + """
local now, n, holder, expires, seconds = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
for i = 1, n do
  local k = KEYS[i]
  purge(k, now)
  local used = tonumber(redis.call('hget', k, 'used') or '0')
  local reserved = tonumber(redis.call('hget', k, 'reserved') or '0')
  local limit, amount = tonumber(ARGV[4 + 2 * i]), tonumber(ARGV[5 + 2 * i])
  if used + reserved + amount > limit then return i end
end
for i = 1, n do
  local k = KEYS[i]
  local amount = ARGV[5 + 2 * i]
  redis.call('zadd', k .. ':held', expires, holder)
  redis.call('hset', k .. ':amounts', holder, amount)
  redis.call('hincrbyfloat', k, 'reserved', amount)
  keep(k, seconds)
end
return 0
"""
)
# KEYS: the counters; ARGV: now, holder, expires. Returns how many of them it still held.
_RENEW = (
    _PURGE
    + """
local renewed = 0
for i = 1, #KEYS do
  local held = KEYS[i] .. ':held'
  purge(KEYS[i], tonumber(ARGV[1]))
  if redis.call('zscore', held, ARGV[2]) then
    redis.call('zadd', held, ARGV[3], ARGV[2])
    renewed = renewed + 1
  end
end
return renewed
"""
)
# KEYS: the counters; ARGV: now, holder, keep, settled_for, then the amount used per counter.
# Returns each counter's used after.
_SETTLE = (
    _PURGE
    + """
local now, holder, seconds = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local out = {}
for i = 1, #KEYS do
  local k = KEYS[i]
  purge(k, now)
  local amount = redis.call('hget', k .. ':amounts', holder)
  if amount then
    redis.call('hincrbyfloat', k, 'reserved', -tonumber(amount))
    redis.call('hdel', k .. ':amounts', holder)
    redis.call('zrem', k .. ':held', holder)
  end
  redis.call('zremrangebyscore', k .. ':settled', '-inf', now - tonumber(ARGV[4]))
  if redis.call('zadd', k .. ':settled', 'NX', now, holder) == 1 then
    redis.call('hincrbyfloat', k, 'used', ARGV[4 + i])
  end
  keep(k, seconds)
  out[i] = redis.call('hget', k, 'used') or '0'
end
return out
"""
)


class RedisReservations:
    """The fleet's counters in Redis. Counters of one reservation must share a hash slot in a
    Cluster (name them with one `{tag}`)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)
        self._renew = client.register_script(_RENEW)

    @_redis_errors
    def reserve(self, holder: str, claims: Sequence[Claim], expires_at: float, keep: float) -> int | None:
        args: list[Any] = [time.time(), len(claims), holder, expires_at, int(keep)]
        for claim in claims:
            args += [claim.limit, claim.amount]
        refused = int(self._reserve([c.counter for c in claims], args))
        return refused - 1 if refused else None

    @_redis_errors
    def renew(self, holder: str, counters: Sequence[str], expires_at: float) -> bool:
        return bool(self._renew(list(counters), [time.time(), holder, expires_at]))

    @_redis_errors
    def settle(self, holder: str, used: Sequence[tuple[str, float]], keep: float) -> list[float]:
        args: list[Any] = [time.time(), holder, int(keep), SETTLED_FOR, *(amount for _, amount in used)]
        return [float(x) for x in self._settle([counter for counter, _ in used], args)]

    @_redis_errors
    def usage(self, counter: str) -> tuple[float, float]:
        used, reserved = self._client.hmget(counter, "used", "reserved")
        return float(used or 0.0), max(0.0, float(reserved or 0.0))
