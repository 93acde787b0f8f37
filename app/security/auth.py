"""API keys for /api/* and a token for /metrics and /stats; compared in constant time, never
logged. Each API key has a name (config.keys): the name is what the rate limit counts, what logs
and metrics show and whose jobs and cache scope a request belongs to — never the secret."""

from __future__ import annotations

import hmac
from typing import Any

from app.errors import ForbiddenError, UnauthorizedError
from app.routing import Guard
from config.keys import MAX_SECRET, KeySpec, digest
from config.settings import Settings

__all__ = ["MAX_KEY_LENGTH", "Credentials", "presented_key"]

MAX_KEY_LENGTH = MAX_SECRET  # characters: longer is no key of ours, refused before it is hashed

_digest = digest  # the name the tests know


def presented_key(environ: dict[str, Any]) -> str | None:
    """Return the key the caller sent in X-API-Key or Authorization: Bearer, if any; raise 401
    `API key malformed` when both are sent and differ (which one would be the caller?)."""
    key = str(environ.get("HTTP_X_API_KEY") or "").strip() or None
    scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    bearer = token.strip() or None if scheme.lower() == "bearer" else None
    if key is not None and bearer is not None and key != bearer:
        raise UnauthorizedError("API key malformed", details="send one key, in X-API-Key or Authorization, not two")
    return key or bearer


def _malformed(key: str) -> str | None:
    """Why `key` cannot be a key at all (then 401, whatever is configured), or None."""
    if len(key) > MAX_KEY_LENGTH:
        return f"the key is longer than {MAX_KEY_LENGTH} characters"
    if "," in key:  # two headers of one name arrive joined by a comma
        return "send one key, in one X-API-Key or Authorization header"
    if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
        return "a key is printable ASCII without spaces"
    return None


def _match(key: str, allowed: tuple[bytes, ...]) -> int | None:
    """The index of `key`'s digest among `allowed`, or None. Every digest is compared (equal
    lengths, no early exit): the time taken reveals nothing about which keys exist."""
    presented = digest(key)
    found = -1
    for index, candidate in enumerate(allowed):
        if hmac.compare_digest(presented, candidate):
            found = index
    return found if found >= 0 else None


class Credentials:
    """API_KEYS, API_KEYS_FILE and METRICS_TOKEN, as digests; `check` runs before the rate limit."""

    def __init__(self, settings: Settings) -> None:
        self.keys: tuple[KeySpec, ...] = settings.keys
        self._api_keys = tuple(spec.digest for spec in self.keys)
        self._metrics_token = (digest(settings.metrics_token),) if settings.metrics_token else ()
        self._by_name = {spec.name: spec for spec in self.keys}
        self._scope = settings.cache_scope

    def __bool__(self) -> bool:
        """Is anything checked at all?"""
        return bool(self._api_keys or self._metrics_token)

    def spec(self, name: str) -> KeySpec | None:
        return self._by_name.get(name)

    def scoped_name(self, name: str | None) -> str | None:
        """The name to keep `name`'s answers apart under (its cache scope `key`), or None when
        they are shared (scope `shared`, or no key)."""
        if name is None:
            return None
        spec = self._by_name.get(name)
        scope = (spec.cache_scope if spec is not None else None) or self._scope
        return name if scope == "key" else None

    def check(self, method: str, guard: Guard, environ: dict[str, Any]) -> str | None:
        """Return the caller's key name when a key was required and valid, None when none was
        required; raise 401 (no key, two, or one that cannot be a key) or 403 (a wrong key).
        `guard` is the routed rule's (app.routing), never read off the raw path."""
        if method == "OPTIONS":
            return None  # CORS preflight carries no credentials
        if guard == "api":
            allowed = self._api_keys
        elif guard == "operator":
            allowed = self._metrics_token
        else:
            return None
        if not allowed:
            return None
        key = presented_key(environ)
        if key is None:
            raise UnauthorizedError()
        problem = _malformed(key)
        if problem is not None:
            raise UnauthorizedError("API key malformed", details=problem)
        index = _match(key, allowed)
        if index is None:
            raise ForbiddenError()
        return self.keys[index].name if allowed is self._api_keys else "metrics"
