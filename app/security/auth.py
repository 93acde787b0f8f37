"""API keys for /api/* and a token for /metrics and /stats; compared in constant time, never logged."""

from __future__ import annotations

import hashlib
import hmac

from flask import Flask, g, request

from app.errors import ForbiddenError, UnauthorizedError
from config.settings import Settings

__all__ = ["init_app", "presented_key"]

_OPERATOR_PATHS = ("/metrics", "/stats")


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def presented_key() -> str | None:
    """Return the key the caller sent in X-API-Key or Authorization: Bearer, if any."""
    key = request.headers.get("X-API-Key")
    if key:
        return key.strip()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _matches(key: str, allowed: tuple[bytes, ...]) -> bool:
    # Digests have equal length, and every allowed key is compared: timing reveals nothing.
    presented = _digest(key)
    found = False
    for candidate in allowed:
        found |= hmac.compare_digest(presented, candidate)
    return found


def init_app(app: Flask, settings: Settings) -> None:
    """Register the check before every view (after the request id, before the rate limit)."""
    api_keys = tuple(_digest(k) for k in settings.api_keys)
    metrics_token = (_digest(settings.metrics_token),) if settings.metrics_token else ()
    if not api_keys and not metrics_token:
        return  # nothing to check: no hook at all, rather than one that looks and returns

    @app.before_request
    def _authenticate() -> None:
        if request.method == "OPTIONS":
            return  # CORS preflight carries no credentials
        if request.path.startswith("/api/"):
            allowed = api_keys
        elif request.path in _OPERATOR_PATHS:
            allowed = metrics_token
        else:
            return
        if not allowed:
            return
        key = presented_key()
        if key is None:
            raise UnauthorizedError()
        if not _matches(key, allowed):
            raise ForbiddenError()
        g.authenticated = True
        # Rate limits count per key; a short digest names it without revealing it.
        g.client_id = "key:" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]
