"""Security headers on every response, CORS for the configured origins, and proxy trust
(the request pipeline adds them: app.pipeline)."""

from __future__ import annotations

from typing import Any

from werkzeug.middleware.proxy_fix import ProxyFix

from config.settings import Settings

__all__ = ["SECURITY", "cors_headers", "wrap_proxy_fix"]

# No view sets these: added in one call rather than one setdefault each.
SECURITY = (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer"))
_ALLOWED_HEADERS = "Content-Type, Authorization, X-API-Key, X-Request-ID, Cache-Control, If-None-Match, Prefer"
_EXPOSED_HEADERS = (
    "X-Request-ID, X-Cache, Age, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, "
    "ETag, Content-Location"
)


def cors_headers(origins: frozenset[str], origin: str | None, method: str) -> list[tuple[str, str]]:
    """The CORS headers for a request from `origin` (none when it is not allowed)."""
    if not origin or not ("*" in origins or origin in origins):
        return []
    headers = [
        ("Access-Control-Allow-Origin", "*" if "*" in origins else origin),
        ("Access-Control-Expose-Headers", _EXPOSED_HEADERS),
    ]
    if method == "OPTIONS":
        headers += [
            ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
            ("Access-Control-Allow-Headers", _ALLOWED_HEADERS),
            ("Access-Control-Max-Age", "600"),
        ]
    return [*headers, ("Vary", "Origin")]


def wrap_proxy_fix(app: Any, settings: Settings) -> Any:
    """Trust X-Forwarded-For and -Proto from TRUSTED_PROXIES hops (none: `app` unchanged)."""
    n = settings.trusted_proxies
    return ProxyFix(app, x_for=n, x_proto=n, x_host=0, x_port=0, x_prefix=0) if n else app
