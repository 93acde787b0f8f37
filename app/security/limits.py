"""RATE_LIMIT on /api/*, per API key or client address, counted with `limits` (the engine
Flask-Limiter is built on) by the request pipeline: in this worker's memory, or in Redis when
REDIS_URL is set (shared by every worker and instance).

The sliding window counter: two counters per client (this window and the last, the last
weighted by how much of it still overlaps), O(1) per request in memory and in Redis. (The moving
window kept one timestamp per request and scanned them all: O(limit); docs/performance.md.)

Redis failing: RATE_LIMIT_ON_REDIS_ERROR=open (the default) counts in this worker's memory until
Redis is back; closed refuses with 503 and Retry-After. The storages share the service's
RedisHealth with the cache and coalescing, so a slow Redis costs a request one timeout, not one
per part.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import redis
from limits import RateLimitItem, WindowStats
from limits import parse as parse_limit
from limits.errors import StorageError
from limits.storage import RedisClusterStorage, RedisSentinelStorage, RedisStorage, storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from app.cache import RedisHealth
from app.errors import RateLimitUnavailableError, TooManyRequestsError
from app.security._memory_storage import SWEPT_MEMORY_URI
from config.settings import Settings

__all__ = ["RateLimit", "Verdict", "client_for"]

RETRY_WHEN_UNAVAILABLE = 5  # seconds: Retry-After of a closed refusal


class _SharedHealth:
    """Mixed into `limits`' Redis storages (their public storage methods): they share the
    service's RedisHealth. While the cache and coalescing leave a failing Redis alone, so does the
    limiter, and a limiter call that fails starts that pause for them too. Registered under "pb+"
    plus each base scheme (pb+redis, pb+redis+cluster, ...)."""

    _health: RedisHealth

    def __init__(self, uri: str, health: RedisHealth, **options: Any) -> None:
        super().__init__(uri.removeprefix("pb+"), **options)  # type: ignore[call-arg]
        self._health = health

    def _guarded(self, operation: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._health.guard(call, *args, **kwargs)
        except redis.RedisError as exc:
            self._health.failed(operation, exc)
            raise

    def acquire_sliding_window_entry(self, *args: Any, **kwargs: Any) -> bool:
        acquired = self._guarded("rate limit", super().acquire_sliding_window_entry, *args, **kwargs)  # type: ignore[misc]
        return bool(acquired)

    def get_sliding_window(self, *args: Any, **kwargs: Any) -> tuple[int, float, int, float]:
        window: tuple[int, float, int, float] = self._guarded(
            "rate limit window",
            super().get_sliding_window,  # type: ignore[misc]
            *args,
            **kwargs,
        )
        return window


# Defining a storage class registers its schemes with `limits`.
for _base in (RedisStorage, RedisClusterStorage, RedisSentinelStorage):
    type(
        f"SharedHealth{_base.__name__}",
        (_SharedHealth, _base),
        {"STORAGE_SCHEME": [f"pb+{s}" for s in _base.STORAGE_SCHEME]},
    )


def _storage_uri(redis_url: str) -> str:
    """REDIS_URL as the limiter's storage URI, on the storages above."""
    if redis_url.startswith("unix://"):
        return "pb+redis+unix://" + redis_url.removeprefix("unix://")
    return "pb+" + redis_url


def client_for(remote_addr: str | None) -> str:
    """The limit's key for a caller without an API key: its address."""
    return f"ip:{remote_addr or 'unknown'}"


@dataclass(frozen=True)
class Verdict:
    """One request counted: allowed or not, and the RateLimit headers its answer carries."""

    allowed: bool
    headers: list[tuple[str, str]]
    limit: str = ""  # the limit that counted it, e.g. "60 per 1 minute"


_UNLIMITED = Verdict(True, [])


class RateLimit:
    """RATE_LIMIT for every client, counted in memory or in Redis (see the module's docstring)."""

    def __init__(self, settings: Settings, health: RedisHealth | None = None) -> None:
        # RATE_LIMIT for every caller (None: none), and each key's own where API_KEYS_FILE sets one.
        self.item: RateLimitItem | None = parse_limit(settings.rate_limit) if settings.rate_limit else None
        self._items = {spec.name: parse_limit(spec.rate_limit) for spec in settings.keys if spec.rate_limit}
        self._memory = SlidingWindowCounterRateLimiter(storage_from_string(SWEPT_MEMORY_URI))
        self._shared: SlidingWindowCounterRateLimiter | None = None
        self._closed = settings.rate_limit_on_redis_error == "closed"
        # The application limit's key, as Flask-Limiter built it: counts survive the move.
        self._prefix = f"{settings.redis_prefix}rl"
        if settings.redis_url:
            options: dict[str, Any] = {
                "socket_timeout": settings.redis_socket_timeout,
                "socket_connect_timeout": settings.redis_socket_timeout,
                "health": health or RedisHealth.for_timeout(settings.redis_socket_timeout),
            }
            storage = storage_from_string(_storage_uri(settings.redis_url), **options)
            self._shared = SlidingWindowCounterRateLimiter(storage)
            self.scope = "shared by all workers"
        else:
            # Each worker counts on its own: the policy header says so, since with N workers a
            # client may get up to N times RateLimit-Limit (README, "Rate limits").
            self.scope = f"counted per worker, {settings.web_concurrency} worker(s)"

    @classmethod
    def wanted(cls, settings: Settings) -> bool:
        """Is any rate limit configured (RATE_LIMIT, or a key's own)?"""
        return bool(settings.rate_limit) or any(spec.rate_limit for spec in settings.keys)

    def hit(self, client: str, key: str | None = None) -> Verdict:
        """Count one request of `client` against its key's own limit, else RATE_LIMIT. Raises
        RateLimitUnavailableError when the shared count cannot be reached and
        RATE_LIMIT_ON_REDIS_ERROR is closed."""
        item = self._items.get(key, self.item) if key is not None else self.item
        if item is None:
            return _UNLIMITED
        args = (self._prefix, client, "global")
        if self._shared is not None:
            try:
                allowed = self._shared.hit(item, *args)
            except (redis.RedisError, StorageError):
                if self._closed:
                    raise RateLimitUnavailableError(retry_after=RETRY_WHEN_UNAVAILABLE) from None
            else:
                return self._verdict(self._shared, item, allowed, args)
        return self._verdict(self._memory, item, self._memory.hit(item, *args), args)

    def _verdict(
        self, strategy: SlidingWindowCounterRateLimiter, item: RateLimitItem, allowed: bool, args: tuple[str, ...]
    ) -> Verdict:
        try:  # the window's state is one more storage read: Redis may fail it even after the hit
            window: WindowStats | None = strategy.get_window_stats(item, *args)
        except (redis.RedisError, StorageError):
            window = None
        return Verdict(allowed, _headers(item, window, allowed, self.scope), str(item))

    @staticmethod
    def refused(verdict: Verdict) -> TooManyRequestsError:
        """The error a refused request gets (its Retry-After is among the verdict's headers)."""
        return TooManyRequestsError(details=f"rate limit {verdict.limit}")


def _headers(item: RateLimitItem, window: WindowStats | None, allowed: bool, scope: str) -> list[tuple[str, str]]:
    """RateLimit-Limit, -Policy, -Remaining and -Reset for `item` whose window is now `window`
    (None when unknown: the answer goes out without -Remaining and -Reset), and Retry-After when
    the request was refused."""
    expiry = item.get_expiry()
    headers = [
        ("RateLimit-Limit", str(item.amount)),
        ("RateLimit-Policy", f'{item.amount};w={expiry};comment="{scope}"'),
    ]
    reset_in = expiry
    if window is not None:
        reset_at = int(window.reset_time + 1)
        reset_in = max(0, math.ceil(reset_at - time.time()))
        headers += [("RateLimit-Remaining", str(window.remaining)), ("RateLimit-Reset", str(reset_in))]
    if not allowed:
        headers.append(("Retry-After", str(max(1, reset_in))))
    return headers
