"""The machine's SQLite file never blocks a gevent worker: while another process holds its write
lock, a greenlet waiting for it waits alone and the rest of the worker goes on — for every store
kept in it (a raw transaction, the upstream slots, the key budgets, the job store)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import pytest

from app.coordination.reservation import Claim, SqliteReservations
from app.gateway.slots import LOCAL_SCHEMA, SqliteSlots
from app.jobs.records import Job
from app.jobs.sqlite_store import SqliteJobStore
from app.localdb import LocalDB
from app.tenancy import ANONYMOUS


def _raw(db: LocalDB) -> None:
    db.execute("insert into waiters (token, score, seen) values ('raw', 0, 0)")


def _slot(db: LocalDB) -> None:
    SqliteSlots(db, limit=1).acquire(ANONYMOUS, time.monotonic() + 60)


def _reserve(db: LocalDB) -> None:
    SqliteReservations(db).reserve("holder", [Claim("c", 5, 10)], time.time() + 60, 60)


STORES: dict[str, tuple[Callable[[Path], LocalDB], Callable[[LocalDB], Any]]] = {
    "statement": (lambda path: LocalDB(str(path), LOCAL_SCHEMA, busy_timeout=60), _raw),
    "upstream slot": (lambda path: LocalDB(str(path), LOCAL_SCHEMA, busy_timeout=60), _slot),
    "key budget": (lambda path: LocalDB(str(path), LOCAL_SCHEMA, busy_timeout=60), _reserve),
}


def _job_store(path: Path) -> Any:
    return SqliteJobStore(str(path), busy_timeout=60)


@pytest.mark.parametrize("store", [*STORES, "job store"])
def test_a_greenlet_waiting_for_the_write_lock_leaves_the_worker_running(tmp_path: Path, store: str) -> None:
    path = tmp_path / "machine.sqlite3"
    if store == "job store":
        jobs, job = _job_store(path), Job(id="j1", task="optimize", input={}, priority="normal")
        action: Callable[[], Any] = lambda: jobs.create(job, 10, 60)  # noqa: E731
    else:
        make, use = STORES[store]
        db = make(path)
        action = lambda: use(db)  # noqa: E731
    other = sqlite3.connect(path, isolation_level=None)  # another process's writer, as far as SQLite knows
    other.execute("begin immediate")
    try:
        waiting = gevent.spawn(action)
        ticks = 0
        deadline = time.monotonic() + 30
        while ticks < 20:  # the loop runs while the greenlet waits on the lock
            gevent.sleep(0.01)
            ticks += 1
            assert time.monotonic() < deadline
        assert not waiting.ready(), "the write lock is held: the waiting greenlet cannot have finished"
    finally:
        other.execute("rollback")
        other.close()
    waiting.get(timeout=30)  # and it goes on once the lock is free
