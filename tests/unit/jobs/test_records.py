"""The job records' contract, on both stores (SQLite in a file, a private Redis): every change of
state is conditional, so two runners can never both start, finish or re-queue one job."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.jobs.records import Job, QueueFull
from app.jobs.redis_store import RedisJobStore
from app.jobs.sqlite_store import SqliteJobStore

TTL = 60.0


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqliteJobStore | RedisJobStore]:
    if request.param == "sqlite":
        yield SqliteJobStore(str(tmp_path / "jobs" / "jobs.sqlite3"))
    else:
        url = request.getfixturevalue("own_redis_url")
        yield RedisJobStore(redis.Redis.from_url(url), "t:")


def _job(n: int = 0, priority: str = "normal", owner: str = "") -> Job:
    return Job(
        id=f"{n:032x}", task="optimize", input={"prompt": f"p{n}", "mode": "code"}, priority=priority, owner=owner
    )


def _take(store: SqliteJobStore | RedisJobStore, lease: float = 30.0) -> Job | None:
    now = time.time()
    return store.take(now, now + lease)


def test_a_job_goes_from_queued_to_running_to_succeeded(store: SqliteJobStore | RedisJobStore) -> None:
    job = _job(1, "high", "key:abc")
    store.create(job, 10, TTL)
    found = store.get(job.id)
    assert found is not None and (found.status, found.owner, found.input, found.priority) == (
        "queued",
        "key:abc",
        job.input,
        "high",
    )
    assert store.counts()[0] == {"high": 1, "normal": 0, "low": 0}
    claimed = _take(store)
    assert claimed is not None and claimed.id == job.id and claimed.status == "running" and claimed.attempts == 1
    assert claimed.started_at is not None
    assert _take(store) is None  # taken is claimed: a second runner gets nothing
    assert store.get(job.id).status == "running"  # type: ignore[union-attr]
    assert store.counts()[:2] == ({"high": 0, "normal": 0, "low": 0}, 1)
    claimed.status, claimed.result, claimed.finished_at = "succeeded", {"optimizedPrompt": "x"}, time.time()
    assert store.finish(claimed, TTL)
    assert not store.finish(claimed, TTL)  # once
    done = store.get(job.id)
    assert done is not None and done.status == "succeeded" and done.result == {"optimizedPrompt": "x"}
    assert store.counts()[1] == 0


ORDERS = [
    ("high before normal before low", [("low", 0), ("normal", 1), ("high", 2)], [2, 1, 0]),
    ("first submitted first within a priority", [("normal", 5), ("normal", 3), ("normal", 4)], [3, 4, 5]),
    ("a later high before an earlier low", [("low", 0), ("low", 1), ("high", 9)], [9, 0, 1]),
]


@pytest.mark.parametrize(("order", "submitted", "taken"), ORDERS, ids=[o[0] for o in ORDERS])
def test_jobs_are_taken_by_priority_then_submission(
    store: SqliteJobStore | RedisJobStore, order: str, submitted: list[tuple[str, int]], taken: list[int]
) -> None:
    base = time.time() - 100
    for priority, n in submitted:
        job = _job(n, priority)
        job.created_at = base + n
        store.create(job, 10, TTL)
    found = [_take(store) for _ in submitted]
    assert [job.id if job else None for job in found] == [_job(n).id for n in taken]
    assert _take(store) is None


def test_four_runners_taking_at_once_never_share_a_job(
    store: SqliteJobStore | RedisJobStore, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Four processes' handles on one store (connections of their own), taking until it is empty."""
    import gevent

    for n in range(40):
        store.create(_job(n, ("high", "normal", "low")[n % 3]), 100, TTL)
    if isinstance(store, SqliteJobStore):
        handles: list[SqliteJobStore | RedisJobStore] = [SqliteJobStore(store.path) for _ in range(4)]
    else:
        url = request.getfixturevalue("own_redis_url")
        handles = [RedisJobStore(redis.Redis.from_url(url), "t:") for _ in range(4)]

    def drain(handle: SqliteJobStore | RedisJobStore) -> list[str]:
        mine = []
        while (job := _take(handle)) is not None:
            mine.append(job.id)
            gevent.sleep(0)
        return mine

    runs = [g.get(timeout=60) for g in [gevent.spawn(drain, handle) for handle in handles]]
    every = [job_id for run in runs for job_id in run]
    assert len(every) == len(set(every)) == 40


def test_the_queue_bound_counts_queued_jobs_only(store: SqliteJobStore | RedisJobStore) -> None:
    for n in range(2):
        store.create(_job(n, "low"), 2, TTL)
    with pytest.raises(QueueFull):
        store.create(_job(2, "high"), 2, TTL)
    finished = _job(3)
    finished.status, finished.finished_at, finished.result = "succeeded", time.time(), {"a": 1}
    store.create(finished, 2, TTL)  # answered from the cache: never queued, never refused
    assert _take(store) is not None
    store.create(_job(4), 2, TTL)  # a slot freed
    assert store.get(_job(2).id) is None


def test_cancel_stops_queued_and_running_jobs_but_not_finished_ones(store: SqliteJobStore | RedisJobStore) -> None:
    running, queued = _job(1, "high"), _job(2, "low")
    store.create(running, 10, TTL)
    store.create(queued, 10, TTL)
    claimed = _take(store)
    assert claimed is not None and claimed.id == running.id
    assert store.cancel(queued.id, TTL).status == "cancelled"  # type: ignore[union-attr]
    assert _take(store) is None  # a cancelled job is off the queue
    assert store.renew([running.id], time.time() + 30) == set()
    assert store.cancel(running.id, TTL).status == "cancelled"  # type: ignore[union-attr]
    assert store.renew([running.id], time.time() + 30) == {running.id}  # its runner learns of it
    claimed.status, claimed.result = "succeeded", {"late": True}
    assert not store.finish(claimed, TTL)  # a cancelled job's late answer is not kept
    assert store.get(running.id).result is None  # type: ignore[union-attr]
    assert store.cancel("f" * 32, TTL) is None
    assert store.counts()[:2] == ({"high": 0, "normal": 0, "low": 0}, 0)


def test_a_silent_runner_s_job_is_queued_again_once(store: SqliteJobStore | RedisJobStore) -> None:
    job = _job(7, "low")
    store.create(job, 10, TTL)
    assert _take(store, lease=-1) is not None  # its lease already over: its runner was killed
    now = time.time()
    assert store.stale(now, 10) == [job.id]
    assert store.requeue(job.id, now)
    assert not store.requeue(job.id, now)  # another runner's keeper comes too late
    again = store.get(job.id)
    assert again is not None and again.status == "queued"
    assert store.counts()[0]["low"] == 1
    assert _take(store).attempts == 2  # type: ignore[union-attr]
    assert store.stale(time.time(), 10) == []  # a live lease is not stale


def test_a_retry_waits_out_its_back_off_on_the_queue(store: SqliteJobStore | RedisJobStore) -> None:
    retried, other = _job(1, "high"), _job(2, "low")
    store.create(retried, 10, TTL)
    assert _take(store) is not None
    store.create(other, 10, TTL)
    assert store.requeue(retried.id, float("1e18"), time.time() + 0.5)  # a transient failure: back off
    assert store.counts()[0] == {"high": 1, "normal": 0, "low": 1}  # still queued, and counted
    first = _take(store)
    assert first is not None and first.id == other.id  # the retry is not due yet: the low one goes first
    assert _take(store) is None
    deadline = time.monotonic() + 10
    while (again := _take(store)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert again is not None and again.id == retried.id and again.attempts == 2


def test_finished_records_expire(store: SqliteJobStore | RedisJobStore) -> None:
    job = _job(9)
    store.create(job, 10, TTL)
    claimed = _take(store)
    assert claimed is not None
    claimed.status, claimed.error, claimed.finished_at = "failed", {"error": "e", "status": 502}, time.time()
    store.finish(claimed, 1)
    assert store.get(job.id) is not None
    deadline = time.monotonic() + 10
    while store.get(job.id) is not None and time.monotonic() < deadline:
        store.purge(time.time())
        time.sleep(0.1)
    assert store.get(job.id) is None


def test_the_oldest_queued_job_s_age(store: SqliteJobStore | RedisJobStore) -> None:
    assert store.counts()[2] is None
    first = _job(1)
    first.created_at = time.time() - 100
    store.create(first, 10, TTL)
    store.create(_job(2, "high"), 10, TTL)
    oldest = store.counts()[2]
    assert oldest is not None and abs(oldest - first.created_at) < 0.01
