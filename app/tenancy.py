"""Whose request this is: its API key's name, and the name its answers are kept apart under
(the key's name when its cache scope is `key`, else None: shared). The gateway puts the scope
name into the cache key, so answers, calls in flight and streams are shared only among requests
of one key; budgets and usage are charged to the key. A request's come from the pipeline (its
Exchange); a job's runner sets its job's (`tenant`); greenlets a request starts carry them
(`carry_tenant`)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from app.exchange import current

__all__ = ["carry_tenant", "key_name", "scope_name", "tenant"]

F = TypeVar("F", bound=Callable[..., Any])
_UNSET = object()
_tenant: ContextVar[object] = ContextVar("prompt_builder_tenant", default=_UNSET)


@contextmanager
def tenant(key: str | None, scope: str | None) -> Iterator[None]:
    """Inside, work is `key`'s, its answers kept apart under `scope` (None: shared)."""
    token = _tenant.set((key, scope))
    try:
        yield
    finally:
        _tenant.reset(token)


def _current() -> tuple[str | None, str | None]:
    explicit = _tenant.get()
    if explicit is not _UNSET:
        return explicit  # type: ignore[return-value]
    exchange = current()
    return (exchange.key, exchange.scope) if exchange is not None else (None, None)


def key_name() -> str | None:
    """The API key's name the current work is for (None: no key)."""
    return _current()[0]


def scope_name() -> str | None:
    """The name the current work's answers are kept apart under, or None (shared)."""
    return _current()[1]


def carry_tenant(fn: F) -> F:
    """`fn`, to run in another greenlet (which starts with no context) as the current tenant."""
    key, scope = _current()
    if key is None and scope is None:
        return fn

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with tenant(key, scope):
            return fn(*args, **kwargs)

    return run  # type: ignore[return-value]
