"""Job records: what a job is, where it stands and its answer, kept where every process of the
service sees them — SQLite beside the on-machine cache (one machine), or Redis (a fleet).

The queue engine (app.jobs.queue) carries only job ids in priority order; the record is the
truth about a job. Every change of state is one conditional step (a transaction in SQLite, a
Lua script in Redis), so two processes can never both start, finish or re-queue the same job:

    pending ──confirm──▶ queued ──claim──▶ running ──finish──▶ succeeded | failed
      │    └──────────claim──────────────▲    │  ▲
      │                 │                     │  └─ requeue: its runner went silent past the lease (killed)
      └─ refuse (gone)  └──── cancel ─────────┴──▶ cancelled

A submission is kept `pending` until its id is on the queue, then `queued`: a submission
refused because its id could not be queued is deleted, or left `pending` to expire when even
that fails — never run, since only `queued` records are put back on the queue by the
reconciliation. A runner that takes a pending id from the queue claims it as usual (its id was
queued: only confirming it failed). Callers see `pending` as `queued`.

A running job's lease is renewed by its runner; a job whose lease ends is queued again by any
runner (`stale` + `requeue`), so a killed worker's jobs finish elsewhere. Finished records expire
after JOB_RESULT_TTL.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import redis

from app.localdb import LocalDB

__all__ = [
    "FINISHED",
    "PRIORITIES",
    "Job",
    "JobStore",
    "RedisJobStore",
    "SqliteJobStore",
]

PRIORITIES = ("high", "normal", "low")
FINISHED = ("succeeded", "failed", "cancelled")


@dataclass
class Job:
    """One job's record."""

    id: str
    task: str
    input: dict[str, Any]
    priority: str
    owner: str = ""  # the caller's key id (key:<digest>) when API keys are configured
    status: str = "queued"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    attempts: int = 0  # times a runner started it (more than 1: a runner was lost mid-job)
    lease_until: float = 0.0

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def shown_status(self) -> str:
        """The status callers see (`pending` is `queued` to them)."""
        return "queued" if self.status == "pending" else self.status

    def to_row(self) -> dict[str, str]:
        """The record as strings (a Redis hash; SQLite columns take the same)."""
        row = asdict(self)
        for name in ("input", "result", "error"):
            row[name] = json.dumps(row[name], ensure_ascii=False, separators=(",", ":"))
        return {name: "" if value is None else str(value) for name, value in row.items()}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        def text(name: str) -> str:
            value = row.get(name)
            return value.decode() if isinstance(value, bytes) else str(value or "")

        def number(name: str) -> float | None:
            raw = text(name)
            return float(raw) if raw else None

        return cls(
            id=text("id"),
            task=text("task"),
            input=json.loads(text("input") or "null") or {},
            priority=text("priority"),
            owner=text("owner"),
            status=text("status"),
            created_at=number("created_at") or 0.0,
            started_at=number("started_at"),
            finished_at=number("finished_at"),
            result=json.loads(text("result") or "null"),
            error=json.loads(text("error") or "null"),
            attempts=int(number("attempts") or 0),
            lease_until=number("lease_until") or 0.0,
        )


class QueueFull(Exception):
    """JOB_QUEUE_MAX jobs are queued already."""


class JobStore(Protocol):
    def create(self, job: Job, max_queued: int, ttl: float) -> None:
        """Keep `job` (queued, or already finished); raise QueueFull when `max_queued` are queued."""

    def get(self, job_id: str) -> Job | None: ...

    def confirm(self, job_id: str) -> None:
        """pending → queued, once its id is on the queue."""

    def refuse(self, job_id: str) -> None:
        """Delete a pending record whose id could not be queued."""

    def claim(self, job_id: str, lease_until: float) -> Job | None:
        """queued (or pending) → running; the job, or None when it is neither (cancelled, taken, gone)."""

    def renew(self, job_ids: list[str], lease_until: float) -> set[str]:
        """Extend the leases of those still running; return the ids that are no longer running."""

    def finish(self, job: Job, ttl: float) -> bool:
        """running → job.status with its result or error; False when it was no longer running."""

    def cancel(self, job_id: str, ttl: float) -> Job | None:
        """queued or running → cancelled; the record as it is now (None: unknown)."""

    def stale(self, now: float, limit: int) -> list[str]:
        """Running jobs whose lease ended before `now`."""

    def requeue(self, job_id: str, now: float) -> bool:
        """running with an ended lease → queued; True when this call did it."""

    def counts(self) -> tuple[dict[str, int], int, float | None]:
        """(queued by priority, running, created_at of the oldest queued job)."""

    def queued(self, limit: int) -> list[tuple[str, str]]:
        """(id, priority) of up to `limit` queued jobs."""

    def purge(self, now: float) -> int:
        """Drop finished records past their time; return how many."""


# --- SQLite ------------------------------------------------------------------------------------------

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
        if job.status == "pending":
            expires = job.created_at + ttl  # never confirmed: it goes like a finished record
        self._run(_create, job.status, values, expires, max_queued)

    def get(self, job_id: str) -> Job | None:
        found = self._run(_one, "select * from job where id = ?", (job_id,))
        if found is None or (found["expires_at"] is not None and found["expires_at"] <= time.time()):
            return None
        return Job.from_row(dict(found))

    def confirm(self, job_id: str) -> None:
        self._run(
            _change,
            "update job set status = 'queued', expires_at = null where id = ? and status = 'pending'",
            (job_id,),
        )

    def refuse(self, job_id: str) -> None:
        self._run(_change, "delete from job where id = ? and status = 'pending'", (job_id,))

    def claim(self, job_id: str, lease_until: float) -> Job | None:
        found = self._run(_claim, job_id, lease_until)
        return Job.from_row(dict(found)) if found is not None else None

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

    def requeue(self, job_id: str, now: float) -> bool:
        return bool(
            self._run(
                _change,
                "update job set status = 'queued', lease_until = 0 where id = ? and status = 'running'"
                " and lease_until < ?",
                (job_id, now),
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

    def queued(self, limit: int) -> list[tuple[str, str]]:
        rows = self._run(_all, "select id, priority from job where status = 'queued' limit ?", (limit,))
        return [(row[0], row[1]) for row in rows]

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
    if status in ("queued", "pending"):
        (queued,) = db.execute("select count(*) from job where status in ('queued', 'pending')").fetchone()
        if queued >= max_queued:
            raise QueueFull()
    db.execute(
        f"insert into job ({', '.join(_COLUMNS)}, expires_at) values ({', '.join('?' * len(_COLUMNS))}, ?)",
        [*values, expires],
    )


def _claim(db: sqlite3.Connection, job_id: str, lease_until: float) -> Any:
    changed = db.execute(
        "update job set status = 'running', started_at = ?, attempts = attempts + 1, lease_until = ?,"
        " expires_at = null where id = ? and status in ('queued', 'pending')",
        (time.time(), lease_until, job_id),
    ).rowcount
    return db.execute("select * from job where id = ?", (job_id,)).fetchone() if changed else None


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


# --- Redis -------------------------------------------------------------------------------------------

# KEYS: record, queued set of its priority, running set; ARGV: id, created_at, max, fields...
_CREATE = """
if redis.call('exists', KEYS[1]) == 1 then return -1 end
local status = ARGV[4]
if status == 'queued' or status == 'pending' then
  local total = 0
  for i = 4, #KEYS do total = total + redis.call('zcard', KEYS[i]) end
  if total >= tonumber(ARGV[3]) then return 0 end
  if status == 'queued' then redis.call('zadd', KEYS[2], ARGV[2], ARGV[1]) end
end
redis.call('hset', KEYS[1], unpack(ARGV, 6))
if status ~= 'queued' then redis.call('expire', KEYS[1], ARGV[5]) end
return 1
"""
# KEYS: record, queued set of its priority; ARGV: id
_CONFIRM = """
if redis.call('hget', KEYS[1], 'status') ~= 'pending' then return 0 end
redis.call('hset', KEYS[1], 'status', 'queued')
redis.call('persist', KEYS[1])
redis.call('zadd', KEYS[2], redis.call('hget', KEYS[1], 'created_at'), ARGV[1])
return 1
"""
# KEYS: record; ARGV: id
_REFUSE = """
if redis.call('hget', KEYS[1], 'status') == 'pending' then redis.call('del', KEYS[1]) end
return 1
"""
# KEYS: record, queued set of its priority, running set; ARGV: id, now, lease_until
_CLAIM = """
local current = redis.call('hget', KEYS[1], 'status')
if current ~= 'queued' and current ~= 'pending' then return nil end
redis.call('persist', KEYS[1])
local attempts = tonumber(redis.call('hget', KEYS[1], 'attempts') or '0') + 1
redis.call('hset', KEYS[1], 'status', 'running', 'started_at', ARGV[2], 'attempts', attempts, 'lease_until', ARGV[3])
redis.call('zrem', KEYS[2], ARGV[1])
redis.call('zadd', KEYS[3], ARGV[3], ARGV[1])
return redis.call('hgetall', KEYS[1])
"""
# KEYS: record, running set; ARGV: id, status, finished_at, result, error, ttl
_FINISH = """
if redis.call('hget', KEYS[1], 'status') ~= 'running' then return 0 end
redis.call('hset', KEYS[1], 'status', ARGV[2], 'finished_at', ARGV[3], 'result', ARGV[4], 'error', ARGV[5])
redis.call('expire', KEYS[1], ARGV[6])
redis.call('zrem', KEYS[2], ARGV[1])
return 1
"""
# KEYS: record, queued set of its priority, running set; ARGV: id, now, ttl
_CANCEL = """
local status = redis.call('hget', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' and status ~= 'pending' then return 0 end
redis.call('hset', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[2])
redis.call('expire', KEYS[1], ARGV[3])
redis.call('zrem', KEYS[2], ARGV[1])
redis.call('zrem', KEYS[3], ARGV[1])
return 1
"""
# KEYS: record, queued set of its priority, running set; ARGV: id, now
_REQUEUE = """
if redis.call('hget', KEYS[1], 'status') ~= 'running' then redis.call('zrem', KEYS[3], ARGV[1]) return 0 end
if tonumber(redis.call('hget', KEYS[1], 'lease_until')) >= tonumber(ARGV[2]) then return 0 end
redis.call('hset', KEYS[1], 'status', 'queued', 'lease_until', '0')
redis.call('zrem', KEYS[3], ARGV[1])
redis.call('zadd', KEYS[2], redis.call('hget', KEYS[1], 'created_at'), ARGV[1])
return 1
"""


class RedisJobStore:
    """Records in Redis: a hash per job, a sorted set of queued ids per priority (by creation
    time: counts and the oldest's age) and one of running ids (by lease end: the stale ones).
    Every key shares one hash tag, so the scripts run in one slot of a Redis Cluster."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._base = f"{prefix}jobs:{{jobs}}"
        self._create = client.register_script(_CREATE)
        self._claim = client.register_script(_CLAIM)
        self._confirm = client.register_script(_CONFIRM)
        self._refuse = client.register_script(_REFUSE)
        self._finish = client.register_script(_FINISH)
        self._cancel = client.register_script(_CANCEL)
        self._requeue = client.register_script(_REQUEUE)

    def _record(self, job_id: str) -> str:
        return f"{self._base}:job:{job_id}"

    def _queued(self, priority: str) -> str:
        return f"{self._base}:queued:{priority}"

    @property
    def _running(self) -> str:
        return f"{self._base}:running"

    def _keys(self, job_id: str, priority: str) -> list[str]:
        return [self._record(job_id), self._queued(priority), self._running]

    def create(self, job: Job, max_queued: int, ttl: float) -> None:
        row = job.to_row()
        flat = [item for pair in row.items() for item in pair]
        keys = [*self._keys(job.id, job.priority), *(self._queued(p) for p in PRIORITIES)]
        done = self._create(keys, [job.id, job.created_at, max_queued, job.status, int(ttl), *flat])
        if done == 0:
            raise QueueFull()
        if done == -1:
            raise ValueError(f"job {job.id} exists")

    def get(self, job_id: str) -> Job | None:
        row: dict[bytes, bytes] = self._client.hgetall(self._record(job_id))  # type: ignore[assignment]
        return Job.from_row({k.decode(): v for k, v in row.items()}) if row else None

    def confirm(self, job_id: str) -> None:
        priority = self._priority(job_id)
        if priority is not None:
            self._confirm(self._keys(job_id, priority)[:2], [job_id])

    def refuse(self, job_id: str) -> None:
        self._refuse([self._record(job_id)], [job_id])

    def _priority(self, job_id: str) -> str | None:
        found: bytes | None = self._client.hget(self._record(job_id), "priority")  # type: ignore[assignment]
        return found.decode() if found is not None else None

    def claim(self, job_id: str, lease_until: float) -> Job | None:
        priority = self._priority(job_id)
        if priority is None:
            return None
        row = self._claim(self._keys(job_id, priority), [job_id, time.time(), lease_until])
        if not row:
            return None
        pairs = iter(row)
        return Job.from_row({k.decode(): v for k, v in zip(pairs, pairs, strict=True)})

    def renew(self, job_ids: list[str], lease_until: float) -> set[str]:
        if not job_ids:
            return set()
        pipe = self._client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self._record(job_id), "status")
        statuses = pipe.execute()
        gone = {job_id for job_id, status in zip(job_ids, statuses, strict=True) if status != b"running"}
        alive = [job_id for job_id in job_ids if job_id not in gone]
        if alive:
            pipe = self._client.pipeline(transaction=False)
            for job_id in alive:
                pipe.hset(self._record(job_id), "lease_until", lease_until)
            pipe.zadd(self._running, dict.fromkeys(alive, lease_until), xx=True)
            pipe.execute()
        return gone

    def finish(self, job: Job, ttl: float) -> bool:
        row = job.to_row()
        keys = [self._record(job.id), self._running]
        now = job.finished_at or time.time()
        return bool(self._finish(keys, [job.id, job.status, now, row["result"], row["error"], int(ttl)]))

    def cancel(self, job_id: str, ttl: float) -> Job | None:
        priority = self._priority(job_id)
        if priority is None:
            return None
        self._cancel(self._keys(job_id, priority), [job_id, time.time(), int(ttl)])
        return self.get(job_id)

    def stale(self, now: float, limit: int) -> list[str]:
        found: list[bytes] = self._client.zrangebyscore(self._running, "-inf", f"({now}", start=0, num=limit)  # type: ignore[assignment]
        return [member.decode() for member in found]

    def requeue(self, job_id: str, now: float) -> bool:
        priority = self._priority(job_id)
        if priority is None:
            self._client.zrem(self._running, job_id)
            return False
        return bool(self._requeue(self._keys(job_id, priority), [job_id, now]))

    def counts(self) -> tuple[dict[str, int], int, float | None]:
        pipe = self._client.pipeline(transaction=False)
        for priority in PRIORITIES:
            pipe.zcard(self._queued(priority))
            pipe.zrange(self._queued(priority), 0, 0, withscores=True)
        pipe.zcard(self._running)
        replies = pipe.execute()
        queued, oldest = {}, None
        for index, priority in enumerate(PRIORITIES):
            queued[priority] = int(replies[2 * index])
            first = replies[2 * index + 1]
            if first:
                oldest = first[0][1] if oldest is None else min(oldest, first[0][1])
        return queued, int(replies[-1]), oldest

    def queued(self, limit: int) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for priority in PRIORITIES:
            members: list[bytes] = self._client.zrange(self._queued(priority), 0, limit - len(found) - 1)  # type: ignore[assignment]
            found += [(member.decode(), priority) for member in members]
            if len(found) >= limit:
                break
        return found

    def purge(self, now: float) -> int:
        return 0  # finished records expire by themselves (EXPIRE)
