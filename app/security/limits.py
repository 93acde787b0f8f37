"""RATE_LIMIT on /api/*, per API key or client address, counted by the request pipeline: in
Redis with `limits` (the engine Flask-Limiter is built on) when REDIS_URL is set (shared by every
worker and instance), else in this worker's memory (app.security.windows: limits' counters,
without the thread bookkeeping a gevent worker does not need).

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
from typing import Any, NamedTuple

import redis
from limits import RateLimitItem
from limits import parse as parse_limit
from limits.errors import StorageError
from limits.storage import RedisClusterStorage, RedisSentinelStorage, RedisStorage, storage_from_string

from app.cache import RedisHealth
from app.errors import RateLimitUnavailableError, TooManyRequestsError
from app.security.windows import WorkerWindows
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


class Verdict(NamedTuple):
    """One request counted: allowed or not, and the RateLimit headers its answer carries (a
    tuple: made on every request, and a frozen dataclass costs three setattr calls more)."""

    allowed: bool
    headers: list[tuple[str, str]]
    limit: str = ""  # the limit that counted it, e.g. "60 per 1 minute"


_UNLIMITED = Verdict(True, [])


@dataclass(frozen=True)
class _Limit:
    """One configured limit, as each request it counts needs it: made once per limit."""

    item: RateLimitItem
    key_before: str  # the window's key around the client, as limits' strategy builds it
    key_after: str
    expiry: int  # seconds of one window
    fixed: tuple[tuple[str, str], ...]  # RateLimit-Limit and -Policy: the same on every answer
    text: str  # e.g. "60 per 1 minute"

    @classmethod
    def of(cls, item: RateLimitItem, prefix: str, scope: str) -> _Limit:
        before, after = item.key_for(prefix, "\0", "global").split("\0")
        expiry = item.get_expiry()
        fixed = (
            ("RateLimit-Limit", str(item.amount)),
            ("RateLimit-Policy", f'{item.amount};w={expiry};comment="{scope}"'),
        )
        return cls(item, before, after, expiry, fixed, str(item))


class RateLimit:
    """RATE_LIMIT for every client, counted in memory or in Redis (see the module's docstring)."""

    def __init__(self, settings: Settings, health: RedisHealth | None = None) -> None:
        # RATE_LIMIT for every caller (None: none), and each key's own where API_KEYS_FILE sets one.
        self.item: RateLimitItem | None = parse_limit(settings.rate_limit) if settings.rate_limit else None
        items = {spec.name: parse_limit(spec.rate_limit) for spec in settings.keys if spec.rate_limit}
        self._memory = WorkerWindows()
        self._shared: Any = None
        self._closed = settings.rate_limit_on_redis_error == "closed"
        # The application limit's key, as Flask-Limiter built it: counts survive the move.
        self._prefix = f"{settings.redis_prefix}rl"
        if settings.redis_url:
            options: dict[str, Any] = {
                "socket_timeout": settings.redis_socket_timeout,
                "socket_connect_timeout": settings.redis_socket_timeout,
                "health": health or RedisHealth.for_timeout(settings.redis_socket_timeout),
            }
            self._shared = storage_from_string(_storage_uri(settings.redis_url), **options)
            self.scope = "shared by all workers"
        else:
            # Each worker counts on its own: the policy header says so, since with N workers a
            # client may get up to N times RateLimit-Limit (README, "Rate limits").
            self.scope = f"counted per worker, {settings.web_concurrency} worker(s)"
        self._limit = _Limit.of(self.item, self._prefix, self.scope) if self.item is not None else None
        self._limits = {name: _Limit.of(item, self._prefix, self.scope) for name, item in items.items()}

    @classmethod
    def wanted(cls, settings: Settings) -> bool:
        """Is any rate limit configured (RATE_LIMIT, or a key's own)?"""
        return bool(settings.rate_limit) or any(spec.rate_limit for spec in settings.keys)

    def hit(self, client: str, key: str | None = None, cost: int = 1) -> Verdict:
        """Count `cost` requests of `client` (all or none) against its key's own limit, else
        RATE_LIMIT. Raises RateLimitUnavailableError when the shared count cannot be reached and
        RATE_LIMIT_ON_REDIS_ERROR is closed."""
        limit = self._limits.get(key, self._limit) if key is not None else self._limit
        if limit is None:
            return _UNLIMITED
        window_key = limit.key_before + client + limit.key_after
        if self._shared is not None:
            try:
                return _count(self._shared, limit, window_key, cost)
            except (redis.RedisError, StorageError):
                if self._closed:
                    raise RateLimitUnavailableError(retry_after=RETRY_WHEN_UNAVAILABLE) from None
        return _count(self._memory, limit, window_key, cost)

    @staticmethod
    def refused(verdict: Verdict) -> TooManyRequestsError:
        """The error a refused request gets (its Retry-After is among the verdict's headers)."""
        return TooManyRequestsError(details=f"rate limit {verdict.limit}")


def _count(storage: Any, limit: _Limit, key: str, cost: int = 1) -> Verdict:
    """The sliding window counter's hit and the window after it, on `storage` directly: limits'
    strategy builds the key and casts on each of its two calls, a third of the limiter's cost in
    a worker (docs/performance.md)."""
    allowed = bool(storage.acquire_sliding_window_entry(key, limit.item.amount, limit.expiry, cost))
    try:  # the window's state is one more storage read: Redis may fail it even after the hit
        window: tuple[int, float, int, float] | None = storage.get_sliding_window(key, limit.expiry)
    except (redis.RedisError, StorageError):
        window = None
    return Verdict(allowed, _headers(limit, window, allowed), limit.text)


def _headers(limit: _Limit, window: tuple[int, float, int, float] | None, allowed: bool) -> list[tuple[str, str]]:
    """RateLimit-Limit, -Policy, -Remaining and -Reset for `limit` whose sliding window is now
    `window` — (previous count, its seconds left, current count, its seconds left), as the
    storage reads it; None when unknown: the answer goes out without -Remaining and -Reset —
    and Retry-After when the request was refused. Remaining and reset as limits' strategy
    reckons them (SlidingWindowCounterRateLimiter.get_window_stats)."""
    headers = list(limit.fixed)
    expiry = reset_in = limit.expiry
    if window is not None:
        previous, previous_left, current, current_left = window
        remaining = max(0, limit.item.amount - math.floor(previous * previous_left / expiry + current))
        reset_after = 0.0
        if previous or current:
            reset_after = min(
                previous_left % (expiry / previous) if previous else math.inf,
                current_left % expiry if current else math.inf,
            )
        now = time.time()
        reset_in = max(0, math.ceil(int(now + reset_after + 1) - now))
        headers += [("RateLimit-Remaining", str(remaining)), ("RateLimit-Reset", str(reset_in))]
    if not allowed:
        headers.append(("Retry-After", str(max(1, reset_in))))
    return headers
