"""Which answers are asked most lately, kept in Redis for every worker: what a new worker warms
its L1 with (predictive warming), instead of the most recently stored.

Each ask of a key (a hit or a miss that reads the cache) adds e^((now - midnight) / TAU) to the
key's score in a sorted set of the day (forward decay: a later ask weighs more, so an ask an
hour ago counts e^-2 of one now; no score is ever rewritten). Yesterday's set, scaled by
e^(-1 day / TAU), fills in after midnight. Asks are added up in the worker and sent in one
pipeline at most every FLUSH_SECONDS (ZINCRBY per key; the set trimmed to `cap` members and
expiring after two days); a worker that dies loses at most that much. Replayed on the shapes of
loadtest/traces.py, warming by this score gave 1.5-2.5x the L1 hits of the most recently stored
in the first 1,000 requests after a restart (docs/performance.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import gevent
import redis

from app.cache.health import RedisHealth

__all__ = ["FLUSH_SECONDS", "TAU", "Popularity"]

TAU = 1800.0  # seconds over which an ask's weight falls to 1/e
DAY = 86_400
FLUSH_SECONDS = 10.0
PENDING_MAX = 10_000  # distinct keys added up between two flushes; more are not counted


class Popularity:
    def __init__(
        self, client: Any, prefix: str, health: RedisHealth, cap: int, clock: Callable[[], float] = time.time
    ) -> None:
        self._client, self._prefix, self._health = client, prefix, health
        self._cap = max(1, cap)
        self._clock = clock
        self._pending: dict[tuple[int, str], float] = {}
        self._flushed_at = clock()
        self._flushing: gevent.Greenlet | None = None

    def _name(self, day: int) -> str:
        return f"{self._prefix}warm:{day}"

    def asked(self, key: str) -> None:
        """Count an ask of `key` now; send what was counted when FLUSH_SECONDS have passed."""
        now = self._clock()
        day = int(now // DAY)
        slot = (day, key)
        weight = self._pending.get(slot)
        if weight is None and len(self._pending) >= PENDING_MAX:
            return
        self._pending[slot] = (weight or 0.0) + math.exp((now - day * DAY) / TAU)
        if now - self._flushed_at >= FLUSH_SECONDS and (self._flushing is None or self._flushing.dead):
            self._flushed_at = now
            self._flushing = gevent.spawn(self.flush)

    def flush(self) -> None:
        """Send the counted asks in one pipeline (a failure is Redis's, and the counts are lost)."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        pipe = self._client.pipeline(transaction=False)
        days = set()
        for (day, key), weight in pending.items():
            pipe.zincrby(self._name(day), weight, key)
            days.add(day)
        for day in days:
            pipe.expire(self._name(day), 2 * DAY)
            pipe.zremrangebyrank(self._name(day), 0, -(self._cap + 1))
        try:
            pipe.execute()
        except redis.RedisError as exc:
            self._health.failed("popularity", exc)

    def likely(self, limit: int) -> list[str]:
        """Up to `limit` keys, the most asked lately first ([] when Redis fails)."""
        if limit <= 0:
            return []
        day = int(self._clock() // DAY)
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.zrevrange(self._name(day), 0, limit - 1, withscores=True)
            pipe.zrevrange(self._name(day - 1), 0, limit - 1, withscores=True)
            today, yesterday = pipe.execute()
        except redis.RedisError as exc:
            self._health.failed("popularity", exc)
            return []
        scores: dict[str, float] = {}
        for members, scale in ((today, 1.0), (yesterday, math.exp(-DAY / TAU))):
            for member, score in members:
                name = member.decode() if isinstance(member, bytes) else str(member)
                scores[name] = scores.get(name, 0.0) + score * scale
        return sorted(scores, key=scores.__getitem__, reverse=True)[:limit]
