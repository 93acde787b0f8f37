"""The lease's contract, run on every store: Redis (a fleet), SQLite (a machine's workers, two
connections to one file standing for two processes) and memory (one process)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest
import redis

from app.coordination.lease import Keeper, Lease, Leases, MemoryLeases, RedisLeases, SqliteLeases
from app.localdb import LocalDB
from tests.support import wait_until


@pytest.fixture(params=["redis", "sqlite", "memory"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Leases]]:
    """A factory of handles on one store: each call another connection (another process's view)."""
    if request.param == "redis":
        url = request.getfixturevalue("own_redis_url")
        yield lambda: RedisLeases(redis.Redis.from_url(url))
    elif request.param == "sqlite":
        path = str(tmp_path / "leases.sqlite3")
        yield lambda: SqliteLeases(LocalDB(path, ""))
    else:
        memory = MemoryLeases()
        yield lambda: memory


def test_one_holder_at_a_time_and_a_retry_with_its_token_is_its_own(stores: Callable[[], Leases]) -> None:
    mine, theirs = stores(), stores()
    lease = mine.acquire("l{a}", 30)
    assert lease is not None and theirs.holder("l{a}") == lease.token
    assert theirs.acquire("l{a}", 30) is None
    again = theirs.acquire("l{a}", 30, token=lease.token)  # a retry after a late reply: still one holder
    assert again is not None and again.token == lease.token
    assert theirs.acquire("l{b}", 30) is not None  # another name is another lease


def test_only_the_holder_renews_or_releases(stores: Callable[[], Leases]) -> None:
    mine, theirs = stores(), stores()
    lease = mine.acquire("l{a}", 30)
    assert lease is not None
    stranger = Lease("l{a}", b"not-the-holder", 30)
    assert not theirs.renew(stranger) and not theirs.release(stranger)
    assert theirs.holder("l{a}") == lease.token
    assert mine.renew(lease) and mine.release(lease)
    assert theirs.holder("l{a}") is None and not mine.release(lease)  # once
    assert theirs.acquire("l{a}", 30) is not None


def test_a_lease_runs_out_and_its_late_holder_can_no_longer_touch_the_next(stores: Callable[[], Leases]) -> None:
    mine, theirs = stores(), stores()
    lease = mine.acquire("l{a}", 0.2)
    assert lease is not None
    taken = wait_until(lambda: theirs.acquire("l{a}", 30), timeout=10, what="the lease to run out")
    assert taken is not None and not mine.renew(lease) and not mine.release(lease)  # the dead holder's lease is over
    assert theirs.holder("l{a}") == taken.token


def test_a_renewed_lease_outlives_its_first_term(stores: Callable[[], Leases]) -> None:
    mine, theirs = stores(), stores()
    lease = mine.acquire("l{a}", 0.6)
    assert lease is not None
    keeper = Keeper(mine)
    keeper.keep(lease)
    ends = time.monotonic() + 2.0  # more than three terms
    while time.monotonic() < ends:
        assert theirs.acquire("l{a}", 30) is None
        gevent.sleep(0.05)
    keeper.drop(lease)
    assert mine.release(lease)


def test_a_waiter_is_woken_by_the_release_long_before_the_lease_would_run_out(
    stores: Callable[[], Leases],
) -> None:
    mine, theirs = stores(), stores()
    lease = mine.acquire("l{a}", 60)
    assert lease is not None
    waiter = _waiting(theirs, "l{a}", time.monotonic() + 60)
    gevent.sleep(0.1)
    assert not waiter.ready()
    released = time.monotonic()
    assert mine.release(lease)
    assert waiter.get(timeout=30) is True
    assert time.monotonic() - released < 30  # woken, not left to the lease's 60 s


class _Thread:
    """A wait in a thread of its own: Redis's blocks on its socket, which only a patched (gevent)
    process turns into a switch of greenlets, and these unit tests run unpatched."""

    def __init__(self, fn: Callable[[], bool]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(1)
        self._future = self._pool.submit(fn)

    def ready(self) -> bool:
        return self._future.done()

    def get(self, timeout: float) -> bool:
        try:
            return self._future.result(timeout)
        finally:
            self._pool.shutdown()


def _waiting(store: Leases, name: str, deadline: float) -> Any:
    if isinstance(store, RedisLeases):
        return _Thread(lambda: store.wait(name, deadline))
    return gevent.spawn(store.wait, name, deadline)


def test_a_wait_ends_at_its_deadline_or_when_the_lease_runs_out(stores: Callable[[], Leases]) -> None:
    mine, theirs = stores(), stores()
    assert theirs.wait("l{free}", time.monotonic() + 5) is True  # free: at once
    assert mine.acquire("l{a}", 60) is not None
    assert theirs.wait("l{a}", time.monotonic() + 0.2) is False
    assert mine.acquire("l{b}", 0.3) is not None  # its holder dies: nobody releases it
    assert theirs.wait("l{b}", time.monotonic() + 30) is True


def test_the_keeper_tells_of_a_lease_lost_to_another_holder(stores: Callable[[], Leases]) -> None:
    mine, theirs = stores(), stores()
    lease = mine.acquire("l{a}", 0.3)
    assert lease is not None
    assert mine.release(lease) and theirs.acquire("l{a}", 30) is not None  # taken by another
    lost: list[Lease] = []
    keeper = Keeper(mine)
    keeper.keep(lease, lost.append)
    ends = time.monotonic() + 10
    while lost != [lease] and time.monotonic() < ends:
        gevent.sleep(0.05)  # the keeper is a greenlet of this (unpatched) process
    assert lost == [lease]
    assert len(keeper) == 0
