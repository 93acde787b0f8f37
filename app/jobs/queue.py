"""The queue under the jobs: huey, on SQLite beside the on-machine cache (one machine) or on
Redis (a fleet), carrying job ids in priority order; and the runner that takes them off it.

huey gives the storage (SQLite with a priority index; a Redis sorted set popped with
BZPOPMIN), the priorities, the task registry and the execution of a task. The loop that takes
tasks is ours (`JobRunner`): it runs inside a gunicorn worker as well as in `make worker`, where
huey's own consumer would install signal handlers over gunicorn's. Neither huey storage
acknowledges a task after it ran — a task taken by a process that is then killed is gone from
the queue — so the job record's lease (app.jobs.records) is what brings such a job back.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event
from gevent.pool import Pool
from huey import PriorityRedisHuey, SqliteHuey
from huey.api import Huey, Task

__all__ = ["PRIORITY_VALUES", "JobQueue", "JobRunner", "RunnerLock"]

log = logging.getLogger(__name__)

# huey runs the highest number first; equal numbers in the order they were queued.
PRIORITY_VALUES = {"high": 20, "normal": 10, "low": 0}
TASK_NAME = "prompt_builder.run_job"
POLL_MIN, POLL_MAX = 0.05, 1.0  # seconds between tries of an empty SQLite queue (doubling)


class JobQueue:
    """huey, with the one task it carries: run the job with this id."""

    def __init__(self, huey: Huey) -> None:
        self.huey = huey
        self._run: Callable[[str], None] = _unbound
        self._task = huey.task(name=TASK_NAME)(self._execute)

    @classmethod
    def sqlite(cls, path: str) -> JobQueue:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return cls(SqliteHuey(name="jobs", filename=path, results=False, utc=True))

    @classmethod
    def redis(cls, pool: Any, prefix: str, read_timeout: float = 1.0) -> JobQueue:
        name = f"{prefix}jobs".replace(":", "_")
        return cls(
            PriorityRedisHuey(name=name, connection_pool=pool, results=False, read_timeout=read_timeout, utc=True)
        )

    def bind(self, run: Callable[[str], None]) -> None:
        """What runs a job, given its id (app.jobs.service.Jobs.run)."""
        self._run = run

    def _execute(self, job_id: str) -> None:
        self._run(job_id)

    @property
    def blocking(self) -> bool:
        """Does `take` wait for a task (Redis) or answer at once (SQLite)?"""
        return bool(getattr(self.huey.storage, "blocking", False))

    def put(self, job_id: str, priority: str) -> None:
        self.huey.enqueue(self._task.task_class(args=(job_id,), id=job_id, priority=PRIORITY_VALUES[priority]))

    def take(self) -> Task | None:
        """The next task, highest priority first (None: the queue is empty)."""
        task: Task | None = self.huey.dequeue()
        return task

    def execute(self, task: Task) -> None:
        self.huey.execute(task)

    def size(self) -> int:
        return int(self.huey.storage.queue_size())

    def job_ids(self) -> set[str]:
        """The ids of every job on the queue now (reads the whole queue: for a rare check)."""
        found = set()
        for data in self.huey.storage.enqueued_items():
            task = self.huey.deserialize_task(data)
            found.add(str(task.args[0]))
        return found


def _unbound(job_id: str) -> None:
    raise RuntimeError("JobQueue.bind was not called")


class RunnerLock:
    """One runner per machine among the server's workers: an exclusive lock on a file, held for
    the process's life and released by the kernel when it dies (another worker then takes it)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        os.makedirs(os.path.dirname(path) if (path := self.path) else ".", exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class JobRunner:
    """Takes tasks off the queue and runs up to `concurrency` of them at once in greenlets;
    beside them a keeper renews the leases of this runner's jobs, stops the ones cancelled
    elsewhere, and queues again the jobs of runners that went silent (killed)."""

    def __init__(
        self,
        queue: JobQueue,
        keeper: Callable[[], None],
        concurrency: int,
        keep_every: float,
        lock: RunnerLock | None = None,
    ) -> None:
        self.queue = queue
        self._keeper = keeper
        self._concurrency = concurrency
        self._keep_every = keep_every
        self._lock = lock
        self._stopped = Event()
        self.wake = Event()  # set when a job is queued in this process: take it without waiting
        self._pool: Pool | None = None
        self._greenlets: list[gevent.Greenlet] = []

    @property
    def active(self) -> bool:
        """Is this process running jobs now?"""
        return self._pool is not None

    def start(self) -> None:
        """Run jobs from now on (with a lock: once this process holds it; it keeps trying)."""
        self._greenlets.append(gevent.spawn(self._main))

    def _main(self) -> None:
        while self._lock is not None and not self._lock.try_acquire():
            if self._stopped.wait(2.0):
                return
        self._pool = Pool(self._concurrency)
        log.info("running jobs here (up to %d at once)", self._concurrency)
        self._greenlets.append(gevent.spawn(self._keep))
        self._take()

    def _take(self) -> None:
        delay = POLL_MIN
        pool = self._pool
        assert pool is not None
        while not self._stopped.is_set():
            pool.wait_available()
            if self._stopped.is_set():
                break
            try:
                task = self.queue.take()
            except Exception:
                log.exception("reading the job queue failed")
                self._stopped.wait(1.0)
                continue
            if task is None:
                if not self.queue.blocking:
                    self.wake.wait(delay)
                    self.wake.clear()
                    delay = min(delay * 2, POLL_MAX)
                continue
            delay = POLL_MIN
            pool.spawn(self._execute, task)

    def _execute(self, task: Task) -> None:
        try:
            self.queue.execute(task)
        except Exception:
            log.exception("a job's task failed")

    def _keep(self) -> None:
        while not self._stopped.wait(self._keep_every):
            try:
                self._keeper()
            except Exception:
                log.exception("keeping the jobs' leases failed")

    def stop(self, grace: float) -> None:
        """Take no more jobs; give those running `grace` seconds, then stop them."""
        self._stopped.set()
        self.wake.set()
        if self._pool is not None:
            self._pool.join(timeout=grace)
            self._pool.kill(block=True, timeout=1.0)
        gevent.killall(self._greenlets, block=True, timeout=1.0)
        if self._lock is not None:
            self._lock.release()

    def wait_started(self, timeout: float) -> bool:
        """For tests and `make worker`: True once this process runs jobs."""
        deadline = time.monotonic() + timeout
        while self._pool is None and time.monotonic() < deadline:
            gevent.sleep(0.01)
        return self._pool is not None
