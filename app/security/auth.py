"""API keys for /api/* and a token for /metrics and /stats; compared in constant time, never logged."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from app.errors import ForbiddenError, UnauthorizedError
from config.settings import Settings

__all__ = ["Credentials", "presented_key"]

_OPERATOR_PATHS = ("/metrics", "/stats")


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def presented_key(environ: dict[str, Any]) -> str | None:
    """Return the key the caller sent in X-API-Key or Authorization: Bearer, if any."""
    key = environ.get("HTTP_X_API_KEY")
    if key:
        return str(key).strip()
    scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _matches(key: str, allowed: tuple[bytes, ...]) -> bool:
    # Digests have equal length, and every allowed key is compared: timing reveals nothing.
    presented = _digest(key)
    found = False
    for candidate in allowed:
        found |= hmac.compare_digest(presented, candidate)
    return found


class Credentials:
    """API_KEYS and METRICS_TOKEN, as digests; `check` runs before the rate limit."""

    def __init__(self, settings: Settings) -> None:
        self._api_keys = tuple(_digest(k) for k in settings.api_keys)
        self._metrics_token = (_digest(settings.metrics_token),) if settings.metrics_token else ()

    def __bool__(self) -> bool:
        """Is anything checked at all?"""
        return bool(self._api_keys or self._metrics_token)

    def check(self, method: str, path: str, environ: dict[str, Any]) -> str | None:
        """Return the caller's key id (key:<digest>: rate limits count per key) when a key was
        required and valid, None when none was required; raise 401 (no key) or 403 (wrong key)."""
        if method == "OPTIONS":
            return None  # CORS preflight carries no credentials
        if path.startswith("/api/"):
            allowed = self._api_keys
        elif path in _OPERATOR_PATHS:
            allowed = self._metrics_token
        else:
            return None
        if not allowed:
            return None
        key = presented_key(environ)
        if key is None:
            raise UnauthorizedError()
        if not _matches(key, allowed):
            raise ForbiddenError()
        # A short digest names the key without revealing it.
        return "key:" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]
