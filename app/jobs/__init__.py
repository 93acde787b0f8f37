"""Jobs: long requests accepted now and answered later, in priority order, by runners that share
the gateway's cache, coalescing and upstream budget (app.jobs.service)."""

from app.jobs.queue import JobQueue, JobRunner, RunnerLock
from app.jobs.records import Job, RedisJobStore, SqliteJobStore
from app.jobs.service import Jobs

__all__ = ["Job", "JobQueue", "JobRunner", "Jobs", "RedisJobStore", "RunnerLock", "SqliteJobStore"]
