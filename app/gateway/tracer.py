"""The tracing interface the gateway uses; the null tracer costs one shared no-op context."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

import gevent

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["NullTracer", "Span", "Tracer", "spawn"]


class Span(Protocol):
    def set_attribute(self, key: str, value: Any) -> Any: ...

    def add_event(self, name: str, attributes: dict[str, Any] | None = None) -> Any: ...


class Tracer(Protocol):
    def span(self, name: str, attributes: dict[str, Any] | None = None) -> AbstractContextManager[Span]: ...

    def current(self) -> Span:
        """The span of the work in hand (a request's, a stream's), or one that records nothing."""
        ...

    def carry(self, fn: F) -> F:
        """`fn`, to run in another greenlet under the current request's trace and sampling
        decision (a greenlet starts with none of them)."""
        ...


def spawn(tracer: Tracer, fn: Callable[..., Any], *args: Any) -> gevent.Greenlet:
    """Start `fn(*args)` in a greenlet of its own on behalf of the current request: the one way
    the gateway does it. Everything the work needs comes in its arguments (the request carries
    its Caller); only the trace and its sampling decision are the context's, carried here."""
    return gevent.spawn(tracer.carry(fn), *args)


class _NullSpan:
    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def add_event(self, name: str, attributes: dict[str, Any] | None = None) -> None:
        pass

    def __enter__(self) -> _NullSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


_NULL_SPAN = _NullSpan()


class NullTracer:
    """Tracing off: nothing is recorded and nothing is allocated per span."""

    def span(self, name: str, attributes: dict[str, Any] | None = None) -> _NullSpan:
        return _NULL_SPAN

    def current(self) -> _NullSpan:
        return _NULL_SPAN

    def carry(self, fn: F) -> F:
        return fn
