"""L2: the cache shared by every worker and instance, in Redis; never fails a request."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import cast

import redis

from app.cache.memory import CachedValue

__all__ = ["RedisCache", "RedisHealth"]

log = logging.getLogger(__name__)


class RedisHealth:
    """Counts Redis failures and logs them at most once per interval, so an outage is visible
    without flooding the logs."""

    def __init__(self, log_interval: float = 30.0, on_failure: Callable[[], None] | None = None) -> None:
        self.failures = 0
        self._on_failure = on_failure
        self._interval = log_interval
        self._last_log = 0.0

    def failed(self, operation: str, exc: Exception) -> None:
        self.failures += 1
        if self._on_failure is not None:
            self._on_failure()
        now = time.monotonic()
        if now - self._last_log >= self._interval:
            self._last_log = now
            log.warning(
                "redis unavailable during %s: %s (failures so far: %d); serving without it",
                operation,
                type(exc).__name__,
                self.failures,
            )


class RedisCache:
    """Entries are CachedValue.encode() bytes, expiring when even a stale answer would be too old."""

    def __init__(self, client: redis.Redis, prefix: str, stale_seconds: float, health: RedisHealth) -> None:
        self._client = client
        self._prefix = f"{prefix}cache:"
        self._stale_seconds = stale_seconds
        self.health = health

    def get(self, key: str) -> CachedValue | None:
        try:
            raw = cast("bytes | None", self._client.get(self._prefix + key))
        except redis.RedisError as exc:
            self.health.failed("cache get", exc)
            return None
        return None if raw is None else CachedValue.decode(raw)

    def set(self, key: str, value: CachedValue) -> bool:
        """Store the entry; return False when it was not stored (already too old, or Redis failed)."""
        keep = value.fresh_until + self._stale_seconds - time.time()
        if keep <= 0:
            return False
        try:
            self._client.set(self._prefix + key, value.encode(), px=max(1, int(keep * 1000)))
        except redis.RedisError as exc:
            self.health.failed("cache set", exc)
            return False
        return True

    def ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except redis.RedisError as exc:
            self.health.failed("ping", exc)
            return False
