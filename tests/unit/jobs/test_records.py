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
    claimed = store.claim(job.id, time.time() + 30)
    assert claimed is not None and claimed.status == "running" and claimed.attempts == 1
    assert claimed.started_at is not None
    assert store.claim(job.id, time.time() + 30) is None  # a second runner gets nothing
    assert store.counts()[:2] == ({"high": 0, "normal": 0, "low": 0}, 1)
    claimed.status, claimed.result, claimed.finished_at = "succeeded", {"optimizedPrompt": "x"}, time.time()
    assert store.finish(claimed, TTL)
    assert not store.finish(claimed, TTL)  # once
    done = store.get(job.id)
    assert done is not None and done.status == "succeeded" and done.result == {"optimizedPrompt": "x"}
    assert store.counts()[1] == 0


def test_the_queue_bound_counts_queued_jobs_only(store: SqliteJobStore | RedisJobStore) -> None:
    for n in range(2):
        store.create(_job(n, "low"), 2, TTL)
    with pytest.raises(QueueFull):
        store.create(_job(2, "high"), 2, TTL)
    finished = _job(3)
    finished.status, finished.finished_at, finished.result = "succeeded", time.time(), {"a": 1}
    store.create(finished, 2, TTL)  # answered from the cache: never queued, never refused
    store.claim(_job(0).id, time.time() + 30)
    store.create(_job(4), 2, TTL)  # a slot freed
    assert store.get(_job(2).id) is None


def test_cancel_stops_queued_and_running_jobs_but_not_finished_ones(store: SqliteJobStore | RedisJobStore) -> None:
    queued, running = _job(1), _job(2)
    store.create(queued, 10, TTL)
    store.create(running, 10, TTL)
    claimed = store.claim(running.id, time.time() + 30)
    assert claimed is not None
    assert store.cancel(queued.id, TTL).status == "cancelled"  # type: ignore[union-attr]
    assert store.claim(queued.id, time.time() + 30) is None
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
    store.claim(job.id, time.time() - 1)  # its lease already over: its runner was killed
    now = time.time()
    assert store.stale(now, 10) == [job.id]
    assert store.requeue(job.id, now)
    assert not store.requeue(job.id, now)  # another runner's keeper comes too late
    again = store.get(job.id)
    assert again is not None and again.status == "queued"
    assert store.counts()[0]["low"] == 1
    assert store.claim(job.id, time.time() + 30).attempts == 2  # type: ignore[union-attr]
    assert store.stale(time.time(), 10) == []  # a live lease is not stale


def test_finished_records_expire(store: SqliteJobStore | RedisJobStore) -> None:
    job = _job(9)
    store.create(job, 10, TTL)
    claimed = store.claim(job.id, time.time() + 30)
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


def test_queued_lists_the_queued_jobs_with_their_priorities(store: SqliteJobStore | RedisJobStore) -> None:
    for n, priority in enumerate(("low", "high", "normal")):
        store.create(_job(n, priority), 10, TTL)
    store.claim(_job(2).id, time.time() + 30)
    assert sorted(store.queued(10)) == [(_job(0).id, "low"), (_job(1).id, "high")]
    assert len(store.queued(1)) == 1
