"""Jobs: an endpoint's request accepted now and answered later, by a runner, through the same
gateway (cache key, coalescing, upstream budget) as a synchronous request.

    submit   validate the task and its input as the endpoint would (same 4xx); answered from
             the cache at once when it can be; else a queued record (the store is the queue)
    run      claim the record, answer it with the endpoint's own service call at the job's
             priority, store the result (or the error) in the record
    cancel   mark it cancelled; a call of this runner's that nobody else waits on is stopped
    keep     (every few seconds, in each runner) renew this runner's leases, stop what was
             cancelled elsewhere, queue again the jobs of a runner that went silent
The job store is the queue (app.jobs.queue): a submission is queued with its record in one
step, and a runner's take claims the job in one step.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gevent
from pydantic import BaseModel

from app.errors import APIError, ServiceUnavailableError
from app.gateway import NotCached
from app.jobs.queue import JobQueue, JobRunner
from app.jobs.records import Job, JobStore, QueueFull
from app.jobs.showing import error_body
from app.schemas import OptimizeRequest
from app.services import CachePolicy, PromptService
from app.tenancy import Caller

if TYPE_CHECKING:
    from app.observability.series import Series
    from app.services.operations import Operation

__all__ = ["JobNotFoundError", "Jobs", "JobsUnavailable"]

log = logging.getLogger(__name__)

QUEUE_FULL_RETRY = 5
TRANSIENT = (502, 503, 504)  # a job that failed so is run again, up to ATTEMPTS times in all
ATTEMPTS = 3
STALE_BATCH = 100
PURGE_EVERY = 60.0  # seconds between a runner's sweeps of expired records (SQLite)


class JobNotFoundError(APIError):
    status_code = 404
    message = "Job not found"
    default_details = "no job with this id is visible to this caller (it may have expired)"


class JobsUnavailableError(ServiceUnavailableError):
    message = "Jobs unavailable"
    default_details = "jobs need CACHE_DIR (one machine) or REDIS_URL (a fleet)"


@dataclass(frozen=True)
class JobsUnavailable:
    """Jobs were asked for (CACHE_DIR or REDIS_URL is set) but their store could not be opened:
    every job request, `Prefer: respond-async` included, is refused (503), and readiness fails."""

    why: str

    def error(self) -> JobsUnavailableError:
        return JobsUnavailableError(
            details="the job store cannot be opened; operators: /health/ready says why", retry_after=30
        )

    def readiness(self) -> dict[str, object]:
        # Degraded, not out of the pool: the synchronous API still serves (as with a failing disk).
        return {"status": "warn", "error": self.why}


class Jobs:
    """The job service of one process: the store, the queue, and (where jobs run) the runner."""

    def __init__(
        self,
        store: JobStore,
        queue: JobQueue,
        prompts: PromptService,
        endpoints: Mapping[str, Operation[Any]],
        *,
        result_ttl: float,
        queue_max: int,
        lease_seconds: float,
        concurrency: int,
        metrics: Series | None = None,
        runner_lock: Any = None,
        scope_of: Callable[[str], str | None] = lambda owner: None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.prompts = prompts
        self._endpoints = endpoints
        self._ttl = result_ttl
        self._max = queue_max
        self._lease = lease_seconds
        self._metrics = metrics
        self._scope_of = scope_of  # a job's owner → the name its answers are kept apart under
        self._running: dict[str, tuple[gevent.Greenlet, list[str]]] = {}  # this runner's jobs
        self._last_purge = 0.0
        queue.bind(self.run)
        self.runner = JobRunner(queue, self.keep, concurrency, min(lease_seconds / 3, 1.0), runner_lock)

    # --- the API's side --------------------------------------------------------------------------

    def submit(self, task: str, body: BaseModel, priority: str, owner: str) -> Job:
        """Accept a job for `task` with its validated `body`: answered at once from the cache when
        it can be, else queued. 503 when JOB_QUEUE_MAX jobs are queued already."""
        job = Job(
            id=secrets.token_hex(16),  # 128 random bits
            task=task,
            input=body.model_dump(mode="json", exclude_unset=True),
            priority=priority,
            owner=owner,
        )
        endpoint = self._endpoints[task]
        try:
            answer, _ = endpoint.answer(self.prompts, body, CachePolicy(upstream=False), self.caller(job))
        except (NotCached, APIError):
            job.status = "queued"  # on the queue with its record, in one step
        else:
            job.status, job.result = "succeeded", answer
            job.started_at = job.finished_at = job.created_at
        try:
            self.store.create(job, self._max, self._ttl)
        except QueueFull:
            raise ServiceUnavailableError(
                "Job queue full",
                details=f"JOB_QUEUE_MAX ({self._max}) jobs are queued; retry after Retry-After seconds",
                retry_after=QUEUE_FULL_RETRY,
            ) from None
        if job.status == "queued":
            self.runner.wake.set()
        self._count_submitted(job)
        return job

    def get(self, job_id: str, owner: str) -> Job:
        job = self.store.get(job_id) if _looks_like_id(job_id) else None
        if job is None or job.owner != owner:
            raise JobNotFoundError()
        return job

    def cancel(self, job_id: str, owner: str) -> Job:
        job = self.get(job_id, owner)
        if job.finished:
            return job
        cancelled = self.store.cancel(job_id, self._ttl)
        self._stop(job_id)
        if cancelled is not None and cancelled.status == "cancelled" and job.status != "cancelled":
            self._finished(cancelled)
        return cancelled or job

    def caller(self, job: Job, keys: list[str] | None = None) -> Caller:
        """Who asks for `job`'s answer: its owner's key and scope, at its priority and submission."""
        key = job.owner.removeprefix("key:") or None
        return Caller(key, self._scope_of(job.owner), job.priority, job.created_at, keys)

    # --- the runner's side -----------------------------------------------------------------------

    def run(self, job: Job) -> None:
        """Run `job`, claimed by this runner (huey's task, on the job store's queue)."""
        job_id = job.id
        self._count_started(job)
        keys: list[str] = []
        self._running[job_id] = (gevent.getcurrent(), keys)
        started = time.perf_counter()
        requeue = False
        try:
            endpoint = self._endpoints[job.task]
            body = endpoint.model.model_validate(job.input)
            caller = self.caller(job, keys)
            if isinstance(body, OptimizeRequest):  # as a stream: its events can be followed live
                answer, _ = self.prompts.optimize_streamed(body, job.id, caller)
            else:
                answer, _ = endpoint.answer(self.prompts, body, CachePolicy(), caller)
            job.status, job.result = "succeeded", answer
        except APIError as error:
            if error.status_code in TRANSIENT and job.attempts < ATTEMPTS:
                requeue = True
            job.status, job.error = "failed", error_body(error)
        except gevent.GreenletExit:
            return  # cancelled (the record says so), or the runner stopping (it queues the job again)
        except Exception:
            log.exception("job %s failed", job_id)
            job.status, job.error = "failed", error_body(APIError())
        finally:
            self._running.pop(job_id, None)
            self._observe_run(job, time.perf_counter() - started)
        # Back off before the next attempt — queued, not in this runner's slot.
        if requeue and self.store.requeue(job_id, float("1e18"), time.time() + min(2.0**job.attempts, 30.0)):
            return
        job.finished_at = time.time()
        if self.store.finish(job, self._ttl):
            self._finished(job)

    def _stop(self, job_id: str) -> None:
        """Stop this runner's greenlet for `job_id`, unless another caller waits on its call."""
        entry = self._running.get(job_id)
        if entry is None:
            return
        greenlet, keys = entry
        gateway = self.prompts.gateway
        if any(gateway.shared(key) for key in keys):
            return  # the call goes on for the others; its answer lands in the cache
        greenlet.kill(block=False)

    def keep(self) -> None:
        """Renew this runner's leases; stop jobs cancelled elsewhere; re-queue silent runners'
        jobs; drop expired records; report the queue's figures."""
        now = time.time()
        gone = self.store.renew(list(self._running), now + self._lease)
        for job_id in gone:
            self._stop(job_id)
        for job_id in self.store.stale(now, STALE_BATCH):
            if self.store.requeue(job_id, now):
                log.warning("job %s: its runner went silent; queued again", job_id)
        if now - self._last_purge > PURGE_EVERY:
            self._last_purge = now
            self.store.purge(now)
        self.report()

    def readiness(self) -> dict[str, object]:
        """For /health/ready: the store reachable (a warning when not: the rest still serves)."""
        try:
            queued, running, _ = self.store.counts()
        except Exception as exc:  # the store's own errors (Redis, SQLite, the disk)
            broken = getattr(self.store, "broken", None)  # its file deleted or replaced: until a restart
            return {"status": "warn", "error": broken or f"{type(exc).__name__}: {exc}"}
        return {"status": "ok", "queued": sum(queued.values()), "running": running}

    def report(self) -> None:
        if self._metrics is None:
            return
        queued, running, oldest = self.store.counts()
        for priority, count in queued.items():
            self._metrics.jobs_queued.labels(priority).set(count)
        self._metrics.jobs_running.set(running)
        self._metrics.jobs_oldest.set(time.time() - oldest if oldest is not None else 0)

    def start_reporting(self, every: float = 5.0) -> None:
        """Report the queue's figures every `every` seconds (a process that runs no jobs)."""

        def report() -> None:
            while True:
                try:
                    self.report()
                except Exception:
                    log.warning("reading the job queue's figures failed", exc_info=True)
                gevent.sleep(every)

        self._reporter = gevent.spawn(report)

    def stop(self, grace: float) -> None:
        """Stop running jobs here; jobs not finished in `grace` are queued again at once."""
        running = dict(self._running)
        reporter = getattr(self, "_reporter", None)
        if reporter is not None:
            reporter.kill(block=False)
        self.runner.stop(grace)
        for job_id in running:
            self.store.requeue(job_id, float("1e18"))  # only if still running: queued again at once

    # --- metrics ---------------------------------------------------------------------------------

    def _count_submitted(self, job: Job) -> None:
        if self._metrics is not None:
            self._metrics.jobs_submitted.labels(job.task, job.priority).inc()
            if job.finished:
                self._metrics.jobs_finished.labels(job.task, "cached").inc()

    def _count_started(self, job: Job) -> None:
        if self._metrics is not None and job.started_at is not None:
            self._metrics.job_wait.labels(job.priority).observe(max(0.0, job.started_at - job.created_at))

    def _observe_run(self, job: Job, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.job_run.labels(job.task).observe(seconds)

    def _finished(self, job: Job) -> None:
        if self._metrics is not None:
            self._metrics.jobs_finished.labels(job.task, job.status).inc()


def _looks_like_id(job_id: str) -> bool:
    return len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)
