"""Rate limits on /api/* with Flask-Limiter: per API key or client IP, in memory or in Redis."""

from __future__ import annotations

import math
import time
from typing import Any

import redis
from flask import Flask, Response, g, request
from flask_limiter import Limiter, RequestLimit
from limits import RateLimitItem, WindowStats
from limits import parse as parse_limit
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisClusterStorage, RedisSentinelStorage, RedisStorage

from app.cache import RedisHealth
from app.errors import error_response
from config.settings import Settings

__all__ = ["ApplicationLimit", "client_for", "init_app", "limit_headers"]


class _SharedHealth:
    """Mixed into `limits`' Redis storages: they share the service's RedisHealth. While the cache
    and coalescing leave a failing Redis alone, so does the limiter (it counts in memory
    meanwhile), and a limiter call that fails starts that pause for them too: a slow Redis then
    costs a request at most one REDIS_SOCKET_TIMEOUT, not one for the limiter and one for the
    cache. Registered under "pb+" plus each base scheme (pb+redis, pb+redis+cluster, ...)."""

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

    def check(self) -> bool:
        """Flask-Limiter's probe for a storage that failed: is it back?"""
        if not self._health.available():
            return False
        if super().check():  # type: ignore[misc]
            return True
        self._health.failed("rate limit check", redis.ConnectionError("ping failed"))
        return False


# Defining a storage class registers its schemes with `limits`.
for _base in (RedisStorage, RedisClusterStorage, RedisSentinelStorage):
    type(
        f"SharedHealth{_base.__name__}",
        (_SharedHealth, _base),
        {"STORAGE_SCHEME": [f"pb+{s}" for s in _base.STORAGE_SCHEME]},
    )


class _SweptMemoryStorage(MemoryStorage):
    """`limits`' memory storage, sweeping expired counters at most once a second. The base class
    starts a new `threading.Timer` (10 ms) on a request whenever the last one has fired: under
    gevent a new greenlet-backed thread every 10 ms, which took 14 % of a worker serving 1,100
    requests/s here (py-spy). Counts do not depend on the sweep (each read drops an expired
    counter itself); it only frees memory, and a second's delay in that is harmless."""

    STORAGE_SCHEME = ["pb+memory"]
    SWEEP_SECONDS = 1.0

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        self._next_sweep = 0.0
        super().__init__(uri, **options)

    def _MemoryStorage__schedule_expiry(self) -> None:  # the base class's private hook, by its mangled name
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.SWEEP_SECONDS
            super()._MemoryStorage__schedule_expiry()  # type: ignore[misc]


def _storage_uri(redis_url: str) -> str:
    """REDIS_URL as the limiter's storage URI, on the storages above."""
    if redis_url.startswith("unix://"):
        return "pb+redis+unix://" + redis_url.removeprefix("unix://")
    return "pb+" + redis_url


def client_for(remote_addr: str | None) -> str:
    """The limit's key for a caller without an API key: its address."""
    return f"ip:{remote_addr or 'unknown'}"


def _client() -> str:
    return g.get("client_id") or client_for(request.remote_addr)


def init_app(app: Flask, settings: Settings, redis_health: RedisHealth | None = None) -> Limiter | None:
    """Limit /api/* to RATE_LIMIT per client; shared by all workers when REDIS_URL is set
    (pausing Redis calls together with the cache and coalescing, through `redis_health`)."""
    if not settings.rate_limit:
        return None
    storage_options: dict[str, Any] = {}
    storage_uri = "pb+memory://"
    if settings.redis_url:
        storage_options = {
            "socket_timeout": settings.redis_socket_timeout,
            "socket_connect_timeout": settings.redis_socket_timeout,
            "health": redis_health or RedisHealth.for_timeout(settings.redis_socket_timeout),
        }
        storage_uri = _storage_uri(settings.redis_url)
    limiter = Limiter(
        _client,
        application_limits=[settings.rate_limit],
        application_limits_exempt_when=lambda: not request.path.startswith("/api/") or request.method == "OPTIONS",
        storage_uri=storage_uri,
        storage_options=storage_options,  # type: ignore[arg-type]
        # The sliding window counter: two counters per client (this window and the last, the
        # last weighted by how much of it still overlaps), O(1) per request in memory and in
        # Redis. The moving window kept one timestamp per request and scanned them all for the
        # RateLimit headers: O(limit) per request, 0.47x of the unlimited throughput at a high
        # limit in memory (make bench, 2026-12-02).
        strategy="sliding-window-counter",
        key_prefix=f"{settings.redis_prefix}rl",
        headers_enabled=False,  # ours below: IETF names, Retry-After only where it means something
        # Redis unreachable: "open" goes on counting in this worker's memory until it is back;
        # "closed" lets the storage error through, answered below with 503.
        swallow_errors=settings.rate_limit_on_redis_error == "open",
        in_memory_fallback_enabled=settings.rate_limit_on_redis_error == "open",
    )
    limiter.init_app(app)
    if settings.redis_url and settings.rate_limit_on_redis_error == "closed":

        def _fail_closed(_error: Exception) -> Response:
            # Only the limiter lets Redis errors out of a request (the cache and coalescing
            # serve without Redis), so this is the shared count being unreachable.
            response = error_response(
                503,
                "Rate limit unavailable",
                "the shared rate limit cannot be checked (RATE_LIMIT_ON_REDIS_ERROR=closed); retry shortly",
            )
            response.headers["Retry-After"] = "5"
            return response

        app.register_error_handler(redis.RedisError, _fail_closed)
        app.register_error_handler(StorageError, _fail_closed)
    # Without shared storage each worker counts on its own: the policy header says so, since
    # with N workers a client may get up to N times RateLimit-Limit (README, "Rate limits").
    workers = settings.web_concurrency
    scope = "shared by all workers" if settings.redis_url else f"counted per worker, {workers} worker(s)"
    app.extensions["application_limit"] = ApplicationLimit(limiter, settings, scope)

    @app.after_request
    def _rate_limit_headers(response: Response) -> Response:
        current = limiter.current_limit
        if current is not None:
            response.headers.extend(limit_headers(current, response.status_code, scope))
        return response

    return limiter


def limit_headers(current: RequestLimit, status: int, scope: str) -> list[tuple[str, str]]:
    """RateLimit-Limit, -Policy, -Remaining and -Reset for the limit a request counted against,
    and Retry-After when it was refused."""
    try:  # the window's state is one more storage read: Redis may fail it even after the hit
        window = current.window
    except (redis.RedisError, StorageError):
        window = None
    return _headers(current.limit, window, status, scope)


def _headers(item: RateLimitItem, window: WindowStats | None, status: int, scope: str) -> list[tuple[str, str]]:
    """The headers for `item` whose window is now `window` (None when unknown: the answer goes
    out without -Remaining and -Reset)."""
    expiry = item.get_expiry()
    headers = [
        ("RateLimit-Limit", str(item.amount)),
        ("RateLimit-Policy", f'{item.amount};w={expiry};comment="{scope}"'),
    ]
    reset_in = expiry
    if window is not None:
        reset_at = int(window.reset_time + 1)  # as Flask-Limiter's RequestLimit.reset_at has it
        reset_in = max(0, math.ceil(reset_at - time.time()))
        headers += [("RateLimit-Remaining", str(window.remaining)), ("RateLimit-Reset", str(reset_in))]
    if status == 429:
        headers.append(("Retry-After", str(max(1, reset_in))))
    return headers


class ApplicationLimit:
    """RATE_LIMIT counted for a request that does not go through Flask (app.api._cached): the
    same strategy, storage and keys Flask-Limiter uses for its application limit, so both paths
    count into one window. Anything but a plain allowed hit is left to Flask-Limiter's own path."""

    def __init__(self, limiter: Limiter, settings: Settings, scope: str) -> None:
        self._limiter = limiter
        self._item = parse_limit(settings.rate_limit)
        self._prefix = f"{settings.redis_prefix}rl"
        self._scope = scope

    def hit(self, client: str) -> list[tuple[str, str]] | None:
        """Count one request of `client` (as `_client` names it); return its RateLimit headers,
        or None when it must go through Flask: over the limit (Flask-Limiter answers 429 without
        counting it again), the storage failing, or the limiter counting in memory until the
        storage is back (Flask-Limiter's own requests notice that)."""
        limiter = self._limiter
        if limiter._storage_dead:  # the fallback's state: Flask-Limiter keeps no public flag
            return None
        args = (self._prefix, client, "global")  # the application limit's key, as Flask-Limiter builds it
        strategy = limiter.limiter
        try:
            if not strategy.hit(self._item, *args):
                return None
        except (redis.RedisError, StorageError):
            return None
        # The window straight from the strategy, not through a RequestLimit as Flask's path has
        # it: 8 of the ~35 us this method took here (in-process, memory storage, 2026-12-03).
        try:
            window = strategy.get_window_stats(self._item, *args)
        except (redis.RedisError, StorageError):
            window = None
        return _headers(self._item, window, 200, self._scope)
