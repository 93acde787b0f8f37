"""L2: the cache shared by every worker and instance, in Redis; never fails a request."""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable
from typing import Any, cast

import redis

from app.cache.memory import CachedValue

__all__ = ["RedisCache", "RedisHealth"]

log = logging.getLogger(__name__)
_HEADER = struct.Struct("!dd")  # stored_at, fresh_until


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
    """Entries are the same serialized bytes as L1, prefixed with their timestamps."""

    def __init__(self, client: redis.Redis, prefix: str, stale_seconds: float, health: RedisHealth) -> None:
        self._client = client
        self._prefix = f"{prefix}cache:"
        self._stale_seconds = stale_seconds
        self.health = health
        self.hits = self.misses = self.errors = 0

    def get(self, key: str) -> CachedValue | None:
        try:
            raw = cast("bytes | None", self._client.get(self._prefix + key))
        except redis.RedisError as exc:
            self.errors += 1
            self.health.failed("cache get", exc)
            return None
        if raw is None or len(raw) < _HEADER.size:
            self.misses += 1
            return None
        self.hits += 1
        stored_at, fresh_until = _HEADER.unpack_from(raw)
        return CachedValue(bytes(raw[_HEADER.size :]), stored_at, fresh_until)

    def set(self, key: str, value: CachedValue) -> None:
        keep = value.fresh_until + self._stale_seconds - time.time()
        if keep <= 0:
            return
        try:
            self._client.set(
                self._prefix + key,
                _HEADER.pack(value.stored_at, value.fresh_until) + value.data,
                px=max(1, int(keep * 1000)),
            )
        except redis.RedisError as exc:
            self.errors += 1
            self.health.failed("cache set", exc)

    def ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except redis.RedisError as exc:
            self.health.failed("ping", exc)
            return False

    def stats(self) -> dict[str, Any]:
        return {"hits": self.hits, "misses": self.misses, "errors": self.errors}
