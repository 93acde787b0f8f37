"""Whose answers a request may share: its key's name when that key's cache scope is `key`
(CACHE_SCOPE, or the key's own in API_KEYS_FILE), else nobody's in particular (None: shared).
The gateway puts this name into the cache key, so answers, calls in flight and streams are shared
only among requests of one key. A request's comes from the pipeline (its Exchange); a job's
runner sets its job's (`cache_scope`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from app.exchange import current

__all__ = ["cache_scope", "scope_name"]

_UNSET = object()
_scope: ContextVar[object] = ContextVar("prompt_builder_cache_scope", default=_UNSET)


@contextmanager
def cache_scope(name: str | None) -> Iterator[None]:
    """Inside, answers are kept apart under `name` (None: shared)."""
    token = _scope.set(name)
    try:
        yield
    finally:
        _scope.reset(token)


def scope_name() -> str | None:
    """The name the current work's answers are kept apart under, or None (shared)."""
    explicit = _scope.get()
    if explicit is not _UNSET:
        return explicit  # type: ignore[return-value]
    exchange = current()
    return exchange.scope if exchange is not None else None
