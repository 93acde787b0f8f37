"""An SQLite file every process of one machine shares (the job store, the upstream budget): one
connection per process (opened after fork), short BEGIN IMMEDIATE transactions, one at a time
per process.

SQLite blocks its caller — on another process's write lock (up to the busy timeout), on a
commit's sync — and a gevent worker blocked is every request of it blocked. So the connection
lives on one thread of this process, and every statement runs there (`gevent.threadpool`, as
the disk tier runs diskcache): the greenlet that asked waits, the others go on.

The file a connection holds must still be the file at its path: one deleted or replaced while
the service runs would split the processes between the old file (still open) and a new one,
and what went into the old one would vanish at the next restart. Each transaction first checks
the path's identity; a mismatch fails it (`sqlite3.OperationalError`), and every later one,
until the instance restarts: the store fails closed and says why."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from gevent.monkey import get_original
from gevent.threadpool import ThreadPool

__all__ = ["LocalDB", "Rows"]

T = TypeVar("T")
_sleep = get_original("time", "sleep")  # the database thread's own wait, never the hub's


class Rows:
    """What a statement gave, read in full on the database's thread: its rows and rowcount."""

    __slots__ = ("rowcount", "rows")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self.rows, self.rowcount = rows, rowcount

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[Any]:
        return self.rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)


class LocalDB:
    def __init__(self, path: str, schema: str, busy_timeout: float = 5.0) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._pool: ThreadPool | None = None
        self._pid = 0
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file opened
        self.broken: str | None = None  # why the file can no longer be trusted
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.create(schema)

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on this process's database thread (one at a time, in the order asked);
        the calling greenlet waits for it, the others run."""
        if self._pool is None or self._pid != os.getpid():  # a forked worker starts its own
            self._pool, self._conn, self._pid = ThreadPool(1), None, os.getpid()
        return self._pool.apply(fn, args)  # type: ignore[no-any-return]

    def _connection(self) -> sqlite3.Connection:  # on the database thread
        if self._conn is None:
            # Used from the pool's one thread only, whichever thread that is (one at a time).
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            _write_ahead(conn, self._busy_timeout)
            conn.execute("pragma synchronous=normal")
            found = os.stat(self.path)
            if self._identity is None:
                self._identity = (found.st_dev, found.st_ino)
            self._conn = conn
        self._check()
        return self._conn

    def _check(self) -> None:
        """Fail when the file at the path is no longer the one this store opened."""
        if self.broken is None:
            try:
                found = os.stat(self.path)
                if (found.st_dev, found.st_ino) != self._identity:
                    self.broken = f"{self.path} was replaced while in use"
            except FileNotFoundError:
                self.broken = f"{self.path} was deleted while in use"
        if self.broken is not None:
            raise sqlite3.OperationalError(f"{self.broken}: restart the instance")

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(connection, *args)` in one transaction (BEGIN IMMEDIATE … COMMIT, ROLLBACK when
        it raises), wholly on the database thread: the write lock is never held across a switch
        of greenlets, whatever else in this process waits on the file."""
        return self._call(self._run, fn, args)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        """One statement in its own transaction: its rows, read in full, and its rowcount."""
        return self.run(_execute, sql, params)

    def create(self, schema: str) -> None:
        """Run the `;`-separated statements of `schema` (create table if not exists …)."""
        self.run(_create, schema)

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:  # on the database thread
        conn = self._connection()
        conn.execute("begin immediate")
        try:
            found = fn(conn, *args)
        except BaseException:
            conn.execute("rollback")
            raise
        conn.execute("commit")
        return found


def _write_ahead(conn: sqlite3.Connection, patience: float) -> None:
    """Put the file in WAL mode, waiting up to `patience` seconds for the lock it takes: SQLite
    answers `database is locked` at once, without its busy handler, while another process
    switches a new file (two workers starting together on a fresh CACHE_DIR), which left one of
    them without its job store until it restarted. Runs on the database thread, which may block."""
    ends = time.monotonic() + patience
    while True:
        try:
            conn.execute("pragma journal_mode=wal")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= ends:
                raise
            _sleep(0.005)


def _execute(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Rows:
    cursor = conn.execute(sql, params)
    return Rows(cursor.fetchall(), cursor.rowcount)


def _create(conn: sqlite3.Connection, schema: str) -> None:
    for statement in schema.split(";"):
        if statement.strip():
            conn.execute(statement)
