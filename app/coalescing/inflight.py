"""Greenlet-level coalescing: identical concurrent calls in one worker share one execution."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from gevent import Timeout
from gevent.event import AsyncResult

from app.errors import GatewayTimeoutError, ServiceUnavailableError

__all__ = ["InFlight"]

T = TypeVar("T")


def _ignore(_delta: int) -> None:
    pass


class InFlight:
    """Map key → pending result. The first caller (leader) runs the call; identical callers
    arriving meanwhile (followers) wait for it and get its value or raise its error.
    `on_wait(+1/-1)` is told when a follower starts and stops waiting.

    Create inside the worker (after gevent patching). Only plain dict operations happen
    between switches, so no lock is needed.
    """

    def __init__(self, on_wait: Callable[[int], None] | None = None) -> None:
        self._pending: dict[str, AsyncResult] = {}
        self._on_wait = on_wait or _ignore

    def run(self, key: str, call: Callable[[], T], timeout: float) -> tuple[T, bool]:
        """Return (value, coalesced): coalesced is True when another caller did the work."""
        pending = self._pending.get(key)
        if pending is not None:
            self._on_wait(1)
            try:
                return pending.get(timeout=timeout), True
            except Timeout:
                raise GatewayTimeoutError("Timed out waiting for an identical request already in flight") from None
            finally:
                self._on_wait(-1)
        result: AsyncResult = AsyncResult()
        self._pending[key] = result
        try:
            value = call()
        except Exception as exc:
            result.set_exception(exc)
            raise
        except BaseException:  # leader killed (GreenletExit, Timeout): followers must not hang
            result.set_exception(ServiceUnavailableError("An identical request in flight was cancelled"))
            raise
        else:
            result.set(value)
            return value, False
        finally:
            if self._pending.get(key) is result:
                del self._pending[key]

    def pending(self, key: str) -> AsyncResult | None:
        """The pending outcome of `key`'s call in flight, if any: (value, coalesced) or its error."""
        return self._pending.get(key)

    def __len__(self) -> int:
        return len(self._pending)
