"""The queue under the jobs, and the runner that takes jobs off it.

The job store (app.jobs.records) is the one queue: a queued record is on it, and taking the next
job claims it in the same step, so nothing can fall between a queue and the record (a runner
killed at any moment leaves either a queued job or a running one whose lease brings it back).
huey is the engine on top — the task registry, a task's serialisation and its execution — with a
storage of ours (`StoreStorage`) whose dequeue is the store's `take`; huey's own storages keep a
queue of their own beside the record, which is what once needed a reconciliation. The loop that
takes tasks is ours (`JobRunner`): it runs inside a gunicorn worker as well as in `make worker`,
where huey's consumer would install signal handlers over gunicorn's.
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
from huey.api import Huey, Task
from huey.storage import BlackHoleStorage

from app.jobs.records import Job, JobStore

__all__ = ["JobQueue", "JobRunner", "RunnerLock", "StoreStorage"]

log = logging.getLogger(__name__)

TASK_NAME = "prompt_builder.run_job"
POLL_MIN, POLL_MAX = 0.05, 1.0  # seconds between looks at an empty queue that cannot notify (doubling)
WAIT = 0.5  # seconds an idle runner waits for news of a job from a store that can notify


class StoreStorage(BlackHoleStorage):
    """huey's storage on the job store: `dequeue` takes the next job and claims it (leased for
    `lease` seconds) in one step. Jobs are queued with their records (JobStore.create), never
    through huey's `enqueue`; huey keeps no results, schedule or locks here."""

    def __init__(self, name: str = "jobs", store: JobStore | None = None, lease: float = 15.0, **_: Any) -> None:
        super().__init__(name)
        assert store is not None
        self.store, self.lease = store, lease
        self.message: Callable[[Job], bytes] = _unbound_message  # the task message of a claimed job
        self.claimed: dict[str, Job] = {}  # taken here, not yet run

    def enqueue(self, data: bytes, priority: Any = None) -> None:
        raise TypeError("a job is queued with its record (JobStore.create), not through huey")

    def dequeue(self) -> bytes | None:
        now = time.time()
        job = self.store.take(now, now + self.lease)
        if job is None:
            return None
        self.claimed[job.id] = job
        return self.message(job)

    def queue_size(self) -> int:
        queued, _, _ = self.store.counts()
        return sum(queued.values())


class JobQueue:
    """huey, on the job store, with the one task it carries: run the job with this id."""

    def __init__(self, store: JobStore, lease_seconds: float) -> None:
        self.store = store
        self.huey = Huey("jobs", storage_class=StoreStorage, store=store, lease=lease_seconds, results=False, utc=True)
        self.storage: StoreStorage = self.huey.storage
        self._run: Callable[[Job], None] = _unbound
        self._task = self.huey.task(name=TASK_NAME)(self._execute)
        self.storage.message = lambda job: self.huey.serialize_task(self._task.task_class(args=(job.id,), id=job.id))

    def bind(self, run: Callable[[Job], None]) -> None:
        """What runs a claimed job (app.jobs.service.Jobs.run)."""
        self._run = run

    def _execute(self, job_id: str) -> None:
        job = self.storage.claimed.pop(job_id, None)
        if job is not None:
            self._run(job)

    def take(self) -> Task | None:
        """The next job's task, claimed (None: nothing to run now)."""
        task: Task | None = self.huey.dequeue()
        return task

    def wait(self, timeout: float) -> bool:
        """Wait for news of a queued job from any process; False when the store cannot notify."""
        return self.store.wait(timeout)

    def execute(self, task: Task) -> None:
        self.huey.execute(task)

    def size(self) -> int:
        return int(self.huey.pending_count())


def _unbound(job: Job) -> None:
    raise RuntimeError("JobQueue.bind was not called")


def _unbound_message(job: Job) -> bytes:
    raise RuntimeError("StoreStorage.message was not set")


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
                self._idle(delay)
                delay = min(delay * 2, POLL_MAX)
                continue
            delay = POLL_MIN
            pool.spawn(self._execute, task)

    def _idle(self, delay: float) -> None:
        """Wait for work: news from the store (any process's submission) where it can notify,
        else this process's own submissions, or `delay` seconds."""
        try:
            notified = self.queue.wait(WAIT)
        except Exception:
            log.warning("waiting for the job queue failed", exc_info=True)
            notified = False
        if not notified:
            self.wake.wait(delay)
        self.wake.clear()

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
