"""Per-worker coalescing: one execution per key, followers get exactly the leader's outcome."""

from __future__ import annotations

import time

import gevent
import pytest
from gevent.event import Event

from app.errors import GatewayTimeoutError, ServiceUnavailableError, UpstreamError
from app.gateway.streams import InFlight


def _slow(counter: list[int], value: str = "answer", delay: float = 0.05):  # type: ignore[no-untyped-def]
    def call() -> str:
        counter.append(1)
        gevent.sleep(delay)
        return value

    return call


class Gate:
    """Counts waiting followers (InFlight's on_wait) and holds the leader's call until all wait."""

    def __init__(self) -> None:
        self.waiting = 0
        self.event = Event()

    def on_wait(self, delta: int) -> None:
        self.waiting += delta

    def open_when(self, followers: int) -> None:
        deadline = time.monotonic() + 30
        while self.waiting < followers:
            assert time.monotonic() < deadline, f"only {self.waiting} of {followers} followers waited"
            gevent.sleep(0.001)
        self.event.set()


def test_concurrent_identical_calls_run_once() -> None:
    gate = Gate()
    inflight, calls = InFlight(on_wait=gate.on_wait), []

    def call() -> str:
        calls.append(1)
        gate.event.wait()
        return "answer"

    jobs = [gevent.spawn(inflight.run, "k", call, 30) for _ in range(100)]
    gate.open_when(99)
    gevent.joinall(jobs, raise_error=True)
    assert gate.waiting == 0
    results = [job.value for job in jobs]
    assert len(calls) == 1
    assert results.count(("answer", False)) == 1
    assert results.count(("answer", True)) == 99
    assert len(inflight) == 0


def test_different_keys_do_not_merge() -> None:
    inflight, calls = InFlight(), []
    jobs = [gevent.spawn(inflight.run, f"k{i}", _slow(calls, f"v{i}"), 5) for i in range(10)]
    gevent.joinall(jobs, raise_error=True)
    assert [job.value for job in jobs] == [(f"v{i}", False) for i in range(10)]
    assert len(calls) == 10


def test_followers_get_the_leaders_error() -> None:
    gate = Gate()
    inflight = InFlight(on_wait=gate.on_wait)

    def failing() -> str:
        gate.event.wait()
        raise UpstreamError("boom")

    jobs = [gevent.spawn(inflight.run, "k", failing, 30) for _ in range(20)]
    gate.open_when(19)
    gevent.joinall(jobs)
    assert all(isinstance(job.exception, UpstreamError) for job in jobs)
    assert {job.exception.status_code for job in jobs} == {502}  # type: ignore[union-attr]
    assert len(inflight) == 0


def test_sequential_calls_are_not_coalesced() -> None:
    inflight, calls = InFlight(), []
    assert inflight.run("k", _slow(calls, delay=0), 1) == ("answer", False)
    assert inflight.run("k", _slow(calls, delay=0), 1) == ("answer", False)
    assert len(calls) == 2


def test_follower_waits_no_longer_than_its_deadline() -> None:
    inflight, calls = InFlight(), []
    leader = gevent.spawn(inflight.run, "k", _slow(calls, delay=0.5), 5)
    gevent.sleep(0)
    with pytest.raises(GatewayTimeoutError):
        inflight.run("k", _slow(calls), 0.05)
    leader.join()
    assert leader.value == ("answer", False)
    assert len(inflight) == 0


def test_killed_leader_releases_followers_and_the_map() -> None:
    inflight, calls = InFlight(), []
    leader = gevent.spawn(inflight.run, "k", _slow(calls, delay=5), 10)
    gevent.sleep(0)
    followers = [gevent.spawn(inflight.run, "k", _slow(calls), 10) for _ in range(5)]
    gevent.sleep(0.01)
    leader.kill()
    gevent.joinall(followers, timeout=2)
    assert all(isinstance(f.exception, ServiceUnavailableError) for f in followers)
    assert len(inflight) == 0
    # the key is usable again
    assert inflight.run("k", _slow(calls, delay=0), 1) == ("answer", False)
