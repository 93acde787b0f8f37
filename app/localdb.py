"""An SQLite file every process of one machine shares (the job store, the upstream budget): one
connection per process (opened after fork), short BEGIN IMMEDIATE transactions, one at a time
per process. SQLite's calls block the worker for their duration; each of these is a few
statements on small tables."""

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
            self._conn, self._pid = conn, os.getpid()
        return self._conn

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
