"""A circuit breaker around the upstream that never holds a lock across the network call."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import pybreaker

from app.errors import CircuitOpenError
from app.providers.base import UpstreamFailure

__all__ = ["STATE_CODES", "Breaker"]

log = logging.getLogger(__name__)

STATE_CODES = {pybreaker.STATE_CLOSED: 0, pybreaker.STATE_OPEN: 1, pybreaker.STATE_HALF_OPEN: 2}


def _raise(failure: UpstreamFailure | None) -> None:
    if failure is not None:
        raise failure


class _StateListener(pybreaker.CircuitBreakerListener):
    def __init__(self, owner: Breaker) -> None:
        self._owner = owner

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self._owner._changed(old_state.name if old_state else None, new_state.name)


class Breaker:
    """pybreaker keeps the state machine (counting, exclusions, listeners). `CircuitBreaker.call`
    holds its lock for the whole call, which under gevent would serialise every upstream request
    in the worker; so we admit a call here, make it unlocked, then replay its outcome through
    `call` with a function that returns or raises at once."""

    def __init__(
        self,
        name: str,
        fail_max: int,
        reset_timeout: float,
        on_change: Callable[[str, int], None] | None = None,
    ) -> None:
        self.name = name
        self._cb = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            exclude=[lambda e: isinstance(e, UpstreamFailure) and not e.counts_against_upstream],
            listeners=[_StateListener(self)],
            name=name,
        )
        self._reset_timeout = reset_timeout
        self._opened_at = 0.0
        self._probing = False
        self._on_change = on_change

    @property
    def state(self) -> str:
        return str(self._cb.current_state)

    @property
    def failures(self) -> int:
        return int(self._cb.fail_counter)

    def retry_after(self) -> float:
        """Return the seconds until an open breaker lets a probe through (0 when not open)."""
        if self.state == pybreaker.STATE_CLOSED:
            return 0.0
        return max(0.0, self._opened_at + self._reset_timeout - time.monotonic())

    def refusal(self) -> CircuitOpenError | None:
        """The error a call made now would be refused with (open, or its probe already out),
        or None when `admit` would let it through. Asks; changes nothing."""
        state = self.state
        if state == pybreaker.STATE_CLOSED:
            return None
        wait = self.retry_after()
        if (state == pybreaker.STATE_OPEN and wait > 0) or self._probing:
            return CircuitOpenError(retry_after=max(wait, 1.0))
        return None

    def admit(self) -> bool:
        """Let a call through or raise CircuitOpenError; return True when the call is the probe."""
        if self.state == pybreaker.STATE_CLOSED:
            return False
        refused = self.refusal()
        if refused is not None:
            raise refused
        self._probing = True
        return True

    def record(self, failure: UpstreamFailure | None, probe: bool) -> None:
        """Feed one call's outcome (None for success) to the state machine."""
        if probe:
            self._probing = False
        with contextlib.suppress(pybreaker.CircuitBreakerError, UpstreamFailure):
            self._cb.call(_raise, failure)

    def release(self, probe: bool) -> None:
        """Forget an admitted call whose outcome is unknown (the caller was cancelled)."""
        if probe:
            self._probing = False

    def _changed(self, old: str | None, new: str) -> None:
        if new == pybreaker.STATE_OPEN:
            self._opened_at = time.monotonic()
        level = logging.WARNING if new == pybreaker.STATE_OPEN else logging.INFO
        log.log(level, "circuit breaker %s: %s -> %s", self.name, old, new)
        if self._on_change is not None:
            self._on_change(self.name, STATE_CODES.get(new, 0))
