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


_OPENER = """
import sys
from app.gateway.slots import LOCAL_SCHEMA
from app.jobs.sqlite_store import SqliteJobStore
from app.localdb import LocalDB
print("ready", flush=True)
for path in sys.stdin:  # each line: a new file, opened by every process at once
    try:
        LocalDB(path.strip(), LOCAL_SCHEMA) if sys.argv[1] == "machine database" else SqliteJobStore(path.strip())
        print("ok", flush=True)
    except Exception as exc:  # what a worker's start-up would have met
        print(f"{type(exc).__name__}: {exc}", flush=True)
"""


@pytest.mark.parametrize("opener", ["machine database", "job store"])
def test_processes_starting_together_on_a_new_file_all_open_it(tmp_path: Path, opener: str) -> None:
    """Workers start at once on a fresh CACHE_DIR: each opens the file as it is created and put
    in WAL mode by another — none fails (SQLite answered one of them `database is locked` at
    once, and that worker served without its job store until restarted). Fresh interpreters,
    as workers are: a fork of this process would inherit its threads' locks."""
    import subprocess
    import sys

    from loadtest._procs import ROOT

    processes, rounds = 3, 12
    started = [
        subprocess.Popen(
            [sys.executable, "-c", _OPENER, opener], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(processes)
    ]
    try:
        assert [process.stdout.readline().strip() for process in started if process.stdout] == ["ready"] * processes
        for round_ in range(rounds):
            path = str(tmp_path / f"round-{round_}.sqlite3")
            for process in started:  # released together: each is blocked reading its next line
                assert process.stdin is not None
                process.stdin.write(path + "\n")
                process.stdin.flush()
            outcomes = [process.stdout.readline().strip() for process in started if process.stdout]
            assert outcomes == ["ok"] * processes, (round_, outcomes)
    finally:
        for process in started:
            process.kill()
            process.wait()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()
