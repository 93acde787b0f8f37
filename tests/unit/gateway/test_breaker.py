"""The breaker: opens after fail_max upstream failures, refuses with Retry-After while open, lets
exactly one probe through after the reset time, and ignores the caller's own errors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pybreaker
import pytest

from app.errors import CircuitOpenError
from app.gateway import breaker as breaker_module
from app.gateway.breaker import Breaker
from app.http import UpstreamFailure

SERVER_ERROR = UpstreamFailure("status", "boom", status=500)
BAD_REQUEST = UpstreamFailure("status", "caller's fault", status=400)


class Clock:
    """Stands in for the clocks of our breaker (time.monotonic) and of pybreaker's state machine
    (datetime.now), so tests move time themselves and both agree, as real clocks do."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(breaker_module.time, "monotonic", clock)

    class FakeDatetime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return datetime.fromtimestamp(clock.now, tz)

    monkeypatch.setattr(pybreaker, "datetime", FakeDatetime)
    return clock


def _fail(breaker: Breaker, failure: UpstreamFailure = SERVER_ERROR) -> None:
    breaker.record(failure, breaker.admit())


def test_opens_after_fail_max_and_reports_changes(clock: Clock) -> None:
    changes: list[tuple[str, int]] = []
    breaker = Breaker("up", fail_max=3, reset_timeout=30, on_change=lambda name, code: changes.append((name, code)))
    for expected in (1, 2):
        _fail(breaker)
        assert (breaker.state, breaker.failures) == ("closed", expected)
    _fail(breaker)
    assert breaker.state == "open" and changes == [("up", 1)]
    with pytest.raises(CircuitOpenError) as info:
        breaker.admit()
    assert info.value.retry_after == 30
    clock.now += 12
    assert breaker.retry_after() == pytest.approx(18)


def test_a_success_resets_the_count(clock: Clock) -> None:
    breaker = Breaker("up", fail_max=2, reset_timeout=30)
    _fail(breaker)
    breaker.record(None, breaker.admit())
    _fail(breaker)
    assert (breaker.state, breaker.failures) == ("closed", 1)


def test_callers_own_errors_never_count(clock: Clock) -> None:
    breaker = Breaker("up", fail_max=1, reset_timeout=30)
    for _ in range(5):
        _fail(breaker, BAD_REQUEST)
    assert (breaker.state, breaker.failures) == ("closed", 0)


def test_one_probe_after_the_reset_time_then_closed_or_open_again(clock: Clock) -> None:
    breaker = Breaker("up", fail_max=1, reset_timeout=10)
    _fail(breaker)
    clock.now += 10
    probe = breaker.admit()
    assert probe is True
    with pytest.raises(CircuitOpenError) as info:
        breaker.admit()  # a second caller while the probe is out
    assert info.value.retry_after == 1.0  # never "retry in 0 s"
    breaker.record(SERVER_ERROR, probe)
    assert breaker.state == "open"
    assert breaker.retry_after() == pytest.approx(10)  # a new open period from the failed probe
    clock.now += 10
    breaker.record(None, breaker.admit())
    assert (breaker.state, breaker.failures) == ("closed", 0)
    assert breaker.admit() is False


def test_a_cancelled_probe_lets_the_next_caller_probe(clock: Clock) -> None:
    breaker = Breaker("up", fail_max=1, reset_timeout=10)
    _fail(breaker)
    clock.now += 10
    breaker.release(breaker.admit())
    assert breaker.admit() is True
