"""The counted reservation's contract, run on every store: Redis (a fleet), SQLite (a machine's
workers, two connections to one file standing for two processes) and memory (one process)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.coordination.redis_reservations import RedisReservations
from app.coordination.reservation import (
    Claim,
    MemoryReservations,
    Reservations,
    SqliteReservations,
    StoreUnavailable,
)
from app.gateway.slots import LOCAL_SCHEMA
from app.localdb import LocalDB
from tests.support import wait_until

KEEP = 3600.0


@pytest.fixture(params=["redis", "sqlite", "memory"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Reservations]]:
    """A factory of handles on one store: each call another connection (another process's view)."""
    if request.param == "redis":
        url = request.getfixturevalue("own_redis_url")
        yield lambda: RedisReservations(redis.Redis.from_url(url))
    elif request.param == "sqlite":
        path = str(tmp_path / "upstream.sqlite3")
        yield lambda: SqliteReservations(LocalDB(path, LOCAL_SCHEMA))
    else:
        memory = MemoryReservations()
        yield lambda: memory


def _later(seconds: float = 60.0) -> float:
    return time.time() + seconds


def test_reserves_within_the_limit_and_refuses_beyond(stores: Callable[[], Reservations]) -> None:
    store = stores()
    assert store.reserve("a", [Claim("c{x}", 10, 4)], _later(), KEEP) is None
    assert store.reserve("b", [Claim("c{x}", 10, 6)], _later(), KEEP) is None  # exactly the limit
    assert store.reserve("c", [Claim("c{x}", 10, 0.5)], _later(), KEEP) == 0
    assert store.usage("c{x}") == (0.0, 10.0)


def test_all_or_none_across_counters(stores: Callable[[], Reservations]) -> None:
    store = stores()
    assert store.reserve("a", [Claim("day{k}", 100, 10), Claim("month{k}", 15, 10)], _later(), KEEP) is None
    assert store.reserve("b", [Claim("day{k}", 100, 10), Claim("month{k}", 15, 10)], _later(), KEEP) == 1
    assert store.usage("day{k}") == (0.0, 10.0)  # the refused holder reserved nothing anywhere


def test_settle_replaces_the_reservation_with_the_use_once(stores: Callable[[], Reservations]) -> None:
    store = stores()
    store.reserve("a", [Claim("t{k}", 100, 60), Claim("m{k}", 100, 60)], _later(), KEEP)
    assert store.settle("a", [("t{k}", 25), ("m{k}", 5)], KEEP) == [25.0, 5.0]
    assert store.settle("a", [("t{k}", 25), ("m{k}", 5)], KEEP) == [25.0, 5.0]  # retried: counted once
    assert store.usage("t{k}") == (25.0, 0.0)
    assert store.reserve("b", [Claim("t{k}", 100, 75)], _later(), KEEP) is None  # 25 used + 75 fits
    store.settle("b", [("t{k}", 0)], KEEP)  # released: used nothing
    assert store.usage("t{k}") == (25.0, 0.0)


def test_a_dead_holders_reservation_ends_at_its_expiry(stores: Callable[[], Reservations]) -> None:
    """A holder that never settles (its process killed) holds its amount until its expiry, then
    the room comes back — not at the end of the period."""
    store = stores()
    assert store.reserve("dead", [Claim("e{k}", 10, 10)], time.time() + 0.3, KEEP) is None
    assert store.reserve("alive", [Claim("e{k}", 10, 10)], _later(), KEEP) == 0
    wait_until(lambda: store.reserve("alive", [Claim("e{k}", 10, 10)], _later(), KEEP) is None, 10, "the expiry")
    store.settle("dead", [("e{k}", 3)], KEEP)  # a late settlement still charges its use, once
    assert store.usage("e{k}") == (3.0, 10.0)


def test_a_renewed_reservation_outlives_its_first_expiry_and_an_ended_one_stays_ended(
    stores: Callable[[], Reservations],
) -> None:
    """Renewal is the holder's lease on its amount: renewed, the reservation holds past its first
    expiry; once it expired or was settled, renewing never brings it back."""
    store = stores()
    first_expiry = time.time() + 1.0
    assert store.reserve("kept", [Claim("n{k}", 10, 6), Claim("o{k}", 10, 6)], first_expiry, KEEP) is None
    assert store.reserve("lost", [Claim("n{k}", 10, 4)], first_expiry, KEEP) is None
    assert store.renew("kept", ["n{k}", "o{k}"], _later())
    time.sleep(max(0.0, first_expiry - time.time()) + 0.1)
    assert not store.renew("lost", ["n{k}"], _later())  # expired: not brought back
    assert store.reserve("late", [Claim("n{k}", 10, 4)], _later(), KEEP) is None  # its room is back
    assert store.reserve("more", [Claim("o{k}", 10, 5)], _later(), KEEP) == 0  # the renewed one holds
    store.settle("late", [("n{k}", 0)], KEEP)
    store.settle("kept", [("n{k}", 1), ("o{k}", 1)], KEEP)
    assert not store.renew("kept", ["n{k}", "o{k}"], _later())  # settled: ended
    assert store.usage("n{k}") == (1.0, 0.0)


def test_concurrent_holders_on_separate_connections_never_exceed_the_limit(
    stores: Callable[[], Reservations],
) -> None:
    """40 holders, each on its own connection, race for a limit that holds 7 of them."""

    def holder(i: int) -> int | None:
        return stores().reserve(f"h{i}", [Claim("r{k}", 70, 10)], _later(), KEEP)  # opened in its thread

    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(holder, range(40)))
    assert answers.count(None) == 7
    assert stores().usage("r{k}") == (0.0, 70.0)


def test_a_store_that_cannot_answer_says_so(tmp_path: Path) -> None:
    no_retry = Retry(NoBackoff(), 0)
    dead = RedisReservations(redis.Redis(port=1, socket_connect_timeout=0.2, retry=no_retry))
    for step in (
        lambda: dead.reserve("a", [Claim("x{k}", 1, 1)], _later(), KEEP),
        lambda: dead.settle("a", [("x{k}", 1)], KEEP),
        lambda: dead.renew("a", ["x{k}"], _later()),
        lambda: dead.usage("x{k}"),
    ):
        with pytest.raises(StoreUnavailable):
            step()
    corrupt = tmp_path / "corrupt.sqlite3"
    corrupt.write_bytes(b"not a database, " * 512)
    with pytest.raises((StoreUnavailable, sqlite3.DatabaseError)):
        SqliteReservations(LocalDB(str(corrupt), ""))
