"""Job records: what a job is, where it stands and its answer, kept where every process of the
service sees them — SQLite beside the on-machine cache (one machine: app.jobs.sqlite_store), or
Redis (a fleet: app.jobs.redis_store).

The store is the queue too: a queued record is on it, ordered by priority, then submission. Every
change of state is one conditional step (a transaction in SQLite, a Lua script in Redis), so two
processes can never both start, finish or re-queue the same job, and nothing sits between the
queue and the record to fall through — taking a job *is* claiming it:

    queued ──take──▶ running ──finish──▶ succeeded | failed
      ▲                │  │
      └── requeue ─────┘  └──▶ cancelled (and from queued)
          (its runner went silent past the lease, stopped, or the run failed transiently: then
           not before a back-off, kept in `lease_until` while queued)

A running job's lease is renewed by its runner; a job whose lease ends is queued again by any
runner (`stale` + `requeue`), so a killed worker's jobs finish elsewhere. Finished records expire
after JOB_RESULT_TTL. (`pending`, a state of records written before the store was the queue, is
shown as `queued` and expires.)
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

__all__ = ["FINISHED", "PRIORITIES", "Job", "JobStore", "QueueFull"]

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
        """Keep `job`: queued (on the queue at once), or already finished (expiring after `ttl`);
        raise QueueFull when `max_queued` are queued."""

    def get(self, job_id: str) -> Job | None: ...

    def take(self, now: float, lease_until: float) -> Job | None:
        """The queued job to run next — highest priority, then first submitted, whose back-off
        (if any) is over by `now` — claimed (running, leased until `lease_until`) in the same
        step; None when there is none."""

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` for news of a queued job from any process; False when the store
        cannot notify (the runner then looks again after a back-off)."""

    def renew(self, job_ids: list[str], lease_until: float) -> set[str]:
        """Extend the leases of those still running; return the ids that are no longer running."""

    def finish(self, job: Job, ttl: float) -> bool:
        """running → job.status with its result or error; False when it was no longer running."""

    def cancel(self, job_id: str, ttl: float) -> Job | None:
        """queued or running → cancelled; the record as it is now (None: unknown)."""

    def stale(self, now: float, limit: int) -> list[str]:
        """Running jobs whose lease ended before `now`."""

    def requeue(self, job_id: str, now: float, not_before: float = 0.0) -> bool:
        """running with a lease ended by `now` → queued, to be taken from `not_before` on; True
        when this call did it."""

    def counts(self) -> tuple[dict[str, int], int, float | None]:
        """(queued by priority, running, created_at of the oldest queued job)."""

    def purge(self, now: float) -> int:
        """Drop finished records past their time; return how many."""
