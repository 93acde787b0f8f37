"""An SQLite file every process of one machine shares (the job store, the upstream budget): one
connection per process (opened after fork), short BEGIN IMMEDIATE transactions, one at a time
per process. SQLite's calls block the worker for their duration; each of these is a few
statements on small tables.

The file a connection holds must still be the file at its path: one deleted or replaced while
the service runs would split the processes between the old file (still open) and a new one,
and what went into the old one would vanish at the next restart. Each transaction first checks
the path's identity; a mismatch fails it (`sqlite3.OperationalError`), and every later one,
until the instance restarts: the store fails closed and says why."""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Any

__all__ = ["LocalDB"]


class LocalDB:
    def __init__(self, path: str, schema: str, busy_timeout: float = 5.0) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()  # made in create_app: a gevent lock once patched
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file opened
        self.broken: str | None = None  # why the file can no longer be trusted
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with self.transaction() as db:
            for statement in schema.split(";"):
                if statement.strip():
                    db.execute(statement)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("pragma journal_mode=wal")
            conn.execute("pragma synchronous=normal")
            found = os.stat(self.path)
            if self._identity is None:
                self._identity = (found.st_dev, found.st_ino)
            self._conn, self._pid = conn, os.getpid()
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

    def transaction(self) -> _Transaction:
        """`with db.transaction() as conn:` — BEGIN IMMEDIATE … COMMIT (ROLLBACK on error)."""
        return _Transaction(self._lock, self._connection)


class _Transaction:
    def __init__(self, lock: Any, connect: Any) -> None:
        self._lock, self._connect = lock, connect

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._conn: sqlite3.Connection = self._connect()
            self._conn.execute("begin immediate")
        except BaseException:
            self._lock.release()
            raise
        return self._conn

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        try:
            self._conn.execute("commit" if kind is None else "rollback")
        finally:
            self._lock.release()
