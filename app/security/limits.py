"""Rate limits on /api/* with Flask-Limiter: per API key or client IP, in memory or in Redis."""

from __future__ import annotations

import math
import time

from flask import Flask, Response, g, request
from flask_limiter import Limiter

from config.settings import Settings

__all__ = ["init_app"]


def _client() -> str:
    return g.get("client_id") or f"ip:{request.remote_addr or 'unknown'}"


def init_app(app: Flask, settings: Settings) -> Limiter | None:
    """Limit /api/* to RATE_LIMIT per client; shared by all workers when REDIS_URL is set."""
    if not settings.rate_limit:
        return None
    storage_options: dict[str, str | int | float] = {}
    if settings.redis_url:
        storage_options = {
            "socket_timeout": settings.redis_socket_timeout,
            "socket_connect_timeout": settings.redis_socket_timeout,
        }
    limiter = Limiter(
        _client,
        application_limits=[settings.rate_limit],
        application_limits_exempt_when=lambda: not request.path.startswith("/api/") or request.method == "OPTIONS",
        storage_uri=settings.redis_url or "memory://",
        storage_options=storage_options,  # type: ignore[arg-type]
        strategy="moving-window",
        key_prefix=f"{settings.redis_prefix}rl",
        headers_enabled=False,  # ours below: IETF names, Retry-After only where it means something
        swallow_errors=True,  # a storage outage must not fail requests
        in_memory_fallback_enabled=True,
    )
    limiter.init_app(app)
    # Without shared storage each worker counts on its own: the policy header says so, since
    # with N workers a client may get up to N times RateLimit-Limit (README, "Rate limits").
    workers = settings.web_concurrency
    scope = "shared by all workers" if settings.redis_url else f"counted per worker, {workers} worker(s)"

    @app.after_request
    def _rate_limit_headers(response: Response) -> Response:
        current = limiter.current_limit
        if current is None:
            return response
        reset_in = max(0, math.ceil(current.reset_at - time.time()))
        response.headers["RateLimit-Limit"] = str(current.limit.amount)
        response.headers["RateLimit-Remaining"] = str(current.remaining)
        response.headers["RateLimit-Reset"] = str(reset_in)
        window = current.limit.get_expiry()
        response.headers["RateLimit-Policy"] = f'{current.limit.amount};w={window};comment="{scope}"'
        if response.status_code == 429:
            response.headers["Retry-After"] = str(max(1, reset_in))
        return response

    return limiter
