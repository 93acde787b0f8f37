"""Job records in an SQLite file beside the on-machine cache (app.jobs.records says what a record
is and how it moves); every process of the machine sees them, and they outlive restarts."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from app.jobs.records import PRIORITIES, Job, QueueFull
from app.localdb import LocalDB

__all__ = ["SqliteJobStore"]

_SCHEMA = """
create table if not exists job (
    id text primary key, task text not null, input text not null, priority text not null,
    owner text not null, status text not null, created_at real not null, started_at real,
    finished_at real, result text, error text, attempts integer not null default 0,
    lease_until real not null default 0, expires_at real
);
create index if not exists job_status_lease on job (status, lease_until);
create index if not exists job_status_priority_created on job (status, priority, created_at);
create index if not exists job_expires on job (expires_at);
"""
_COLUMNS = (
    "id",
    "task",
    "input",
    "priority",
    "owner",
    "status",
    "created_at",
    "started_at",
    "finished_at",
    "result",
    "error",
    "attempts",
    "lease_until",
)


class SqliteJobStore:
    """Records in an SQLite file: every process on the machine sees them, and they outlive
    restarts (app.localdb: a connection per process, short transactions)."""

    def __init__(self, path: str, busy_timeout: float = 5.0) -> None:
        self.path = path
        self._local = LocalDB(path, _SCHEMA, busy_timeout)

    @property
    def broken(self) -> str | None:
        """Why the file can no longer be used (deleted or replaced while in use), if so."""
        return self._local.broken

    def _run(self, fn: Any, *args: Any) -> Any:
        """`fn(connection, *args)` in one transaction on the database thread (app.localdb)."""
        return self._local.run(fn, *args)

    def create(self, job: Job, max_queued: int, ttl: float) -> None:
        row = job.to_row()
        nullable = ("started_at", "finished_at", "result", "error")
        values = [(row[name] or None) if name in nullable else row[name] for name in _COLUMNS]
        expires = job.finished_at + ttl if job.finished_at is not None else None
        self._run(_create, job.status, values, expires, max_queued)

    def get(self, job_id: str) -> Job | None:
        found = self._run(_one, "select * from job where id = ?", (job_id,))
        if found is None or (found["expires_at"] is not None and found["expires_at"] <= time.time()):
            return None
        return Job.from_row(dict(found))

    def take(self, now: float, lease_until: float) -> Job | None:
        found = self._run(_take, now, lease_until)
        return Job.from_row(dict(found)) if found is not None else None

    def wait(self, timeout: float) -> bool:
        return False  # another process's submission cannot wake this one: the runner looks again

    def renew(self, job_ids: list[str], lease_until: float) -> set[str]:
        if not job_ids:
            return set()
        running: set[str] = self._run(_renew, job_ids, lease_until)
        return set(job_ids) - running

    def finish(self, job: Job, ttl: float) -> bool:
        row = job.to_row()
        now = job.finished_at or time.time()
        return bool(
            self._run(
                _change,
                "update job set status = ?, finished_at = ?, result = ?, error = ?, expires_at = ?"
                " where id = ? and status = 'running'",
                (job.status, now, row["result"] or None, row["error"] or None, now + ttl, job.id),
            )
        )

    def cancel(self, job_id: str, ttl: float) -> Job | None:
        now = time.time()
        self._run(
            _change,
            "update job set status = 'cancelled', finished_at = ?, expires_at = ?"
            " where id = ? and status in ('queued', 'running', 'pending')",
            (now, now + ttl, job_id),
        )
        return self.get(job_id)

    def stale(self, now: float, limit: int) -> list[str]:
        rows = self._run(_all, "select id from job where status = 'running' and lease_until < ? limit ?", (now, limit))
        return [row[0] for row in rows]

    def requeue(self, job_id: str, now: float, not_before: float = 0.0) -> bool:
        return bool(
            self._run(
                _change,
                "update job set status = 'queued', lease_until = ? where id = ? and status = 'running'"
                " and lease_until < ?",
                (not_before, job_id, now),
            )
        )

    def counts(self) -> tuple[dict[str, int], int, float | None]:
        rows, running = self._run(_counts)
        queued = dict.fromkeys(PRIORITIES, 0)
        oldest = None
        for priority, count, first in rows:
            queued[priority] = count
            oldest = first if oldest is None else min(oldest, first)
        return queued, running, oldest

    def purge(self, now: float) -> int:
        return int(self._run(_change, "delete from job where expires_at is not null and expires_at <= ?", (now,)))


# Steps of the SQLite store, each one transaction on the database thread.


def _one(db: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> Any:
    return db.execute(sql, params).fetchone()


def _all(db: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    return db.execute(sql, params).fetchall()


def _change(db: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> int:
    return db.execute(sql, params).rowcount


def _create(db: sqlite3.Connection, status: str, values: list[Any], expires: float | None, max_queued: int) -> None:
    if status == "queued":
        (queued,) = db.execute("select count(*) from job where status = 'queued'").fetchone()
        if queued >= max_queued:
            raise QueueFull()
    db.execute(
        f"insert into job ({', '.join(_COLUMNS)}, expires_at) values ({', '.join('?' * len(_COLUMNS))}, ?)",
        [*values, expires],
    )


def _take(db: sqlite3.Connection, now: float, lease_until: float) -> Any:
    """The next queued job (priority, then submission; its back-off over), claimed."""
    for priority in PRIORITIES:
        row = db.execute(
            "select id from job where status = 'queued' and priority = ? and lease_until <= ?"
            " order by created_at, id limit 1",
            (priority, now),
        ).fetchone()
        if row is not None:
            db.execute(
                "update job set status = 'running', started_at = ?, attempts = attempts + 1, lease_until = ?,"
                " expires_at = null where id = ?",
                (time.time(), lease_until, row[0]),
            )
            return db.execute("select * from job where id = ?", (row[0],)).fetchone()
    return None


def _renew(db: sqlite3.Connection, job_ids: list[str], lease_until: float) -> set[str]:
    marks = ", ".join("?" * len(job_ids))
    db.execute(f"update job set lease_until = ? where status = 'running' and id in ({marks})", [lease_until, *job_ids])
    return {row[0] for row in db.execute(f"select id from job where status = 'running' and id in ({marks})", job_ids)}


def _counts(db: sqlite3.Connection) -> tuple[list[Any], int]:
    rows = db.execute(
        "select priority, count(*), min(created_at) from job where status = 'queued' group by priority"
    ).fetchall()
    (running,) = db.execute("select count(*) from job where status = 'running'").fetchone()
    return rows, running
