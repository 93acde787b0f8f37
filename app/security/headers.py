"""Security headers on every response, CORS for the configured origins, and proxy trust."""

from __future__ import annotations

from flask import Flask, Response, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from config.settings import Settings

__all__ = ["SECURITY", "cors_headers", "init_app"]

# No view sets these: added in one call rather than one setdefault each (~5 µs a response here).
SECURITY = (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer"))
_ALLOWED_HEADERS = "Content-Type, Authorization, X-API-Key, X-Request-ID, Cache-Control"
_EXPOSED_HEADERS = "X-Request-ID, X-Cache, Age, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset"


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


def init_app(app: Flask, settings: Settings) -> None:
    """Trust X-Forwarded-* only from TRUSTED_PROXIES hops; add headers to every response."""
    if settings.trusted_proxies:
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=0, x_port=0, x_prefix=0)  # type: ignore[method-assign]
    origins = frozenset(settings.cors_origins)

    @app.after_request
    def _headers(response: Response) -> Response:
        headers = response.headers
        headers.extend(SECURITY)
        if g.get("authenticated"):
            headers["Cache-Control"] = "no-store"
        if origins:
            environ = request.environ
            cors = cors_headers(origins, environ.get("HTTP_ORIGIN"), environ["REQUEST_METHOD"])
            for name, value in cors:
                if name == "Vary":
                    headers.add(name, value)
                else:
                    headers[name] = value
        return response
