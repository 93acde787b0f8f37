"""How a job is shown to its caller: its record as JSON (GET /api/jobs/{id}), the wait it is
told to keep polling at, and its server-sent events (live from the job's own stream when it has
one)."""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import gevent

from app.errors import APIError
from app.gateway.replay import replay_text
from app.gateway.streams import HEARTBEAT, sse_event
from app.jobs.records import FINISHED, Job
from app.schemas import OptimizeRequest

if TYPE_CHECKING:
    from app.services import PromptService
    from app.tenancy import Caller


class Jobs(Protocol):
    """What the events of a job read of the job service (app.jobs.service.Jobs)."""

    prompts: PromptService

    def get(self, job_id: str, owner: str) -> Job: ...

    def caller(self, job: Job) -> Caller: ...


__all__ = ["error_body", "events", "links", "retry_after", "view"]

RETRY_AFTER_QUEUED = 2  # seconds a caller polling a job that has not finished is told to wait
EVENTS_POLL = 0.25  # seconds between a job's record reads while its events are followed


def error_body(error: APIError) -> dict[str, Any]:
    """An error as a job's record keeps it: the usual shape, with the status it would answer."""
    return {"error": error.message, "details": error.details, "status": error.status_code}


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment % 1 * 1000):03d}Z"


def view(job: Job) -> dict[str, Any]:
    """The job as GET /api/jobs/{id} answers it."""
    return {
        "id": job.id,
        "status": job.shown_status,
        "task": job.task,
        "priority": job.priority,
        "createdAt": _iso(job.created_at),
        "startedAt": _iso(job.started_at),
        "finishedAt": _iso(job.finished_at),
        "result": job.result,
        "error": job.error,
        "links": links(job.id),
    }


def events(jobs: Jobs, job: Job, owner: str) -> Iterator[bytes]:
    """The job's server-sent events: `status` on each change; for `optimize`, the answer as
    /api/optimize-stream sends it (refined_delta, refined, done) once it is there; ends
    when the job ends."""
    last = None
    followed = False  # the answer's events sent live, from the job's own stream
    while True:
        if job.shown_status != last:
            last = job.shown_status
            yield sse_event("status", {"id": job.id, "status": job.shown_status})
        if job.finished:
            break
        if job.status == "running" and job.task == "optimize" and not followed:
            live = jobs.prompts.join_optimize_stream(
                OptimizeRequest.model_validate(job.input), job.id, jobs.caller(job)
            )
            if live is not None:
                followed = True
                job = yield from _relay(jobs, live.events, job, owner)
                if job.status == "cancelled":
                    followed = False  # the answer's events end here: the status says why
                continue
        gevent.sleep(EVENTS_POLL)
        yield HEARTBEAT
        job = jobs.get(job.id, owner)
    if followed:
        return
    if job.status == "succeeded" and job.task == "optimize" and job.result is not None:
        result = job.result
        usage = result.get("usage") or {}
        yield replay_text(
            str(result.get("optimizedPrompt", "")),
            str(result.get("mode", "")),
            str(result.get("provider", "")),
            str(result.get("model", "")),
            (int(usage.get("inputTokens", 0)), int(usage.get("outputTokens", 0))),
        )
    elif job.status == "failed" and job.error is not None:
        yield sse_event("error", {**job.error, "status": "failed"})


def _relay(jobs: Jobs, events: Iterator[bytes], job: Job, owner: str) -> Generator[bytes, None, Job]:
    """Pass on the job's live events, reading its record every EVENTS_POLL seconds: when it
    is cancelled (here or in another process), stop following at once — the follower leaves
    the stream, so a call nobody else shares is closed — and return the record."""
    checked = time.monotonic()
    try:
        for chunk in events:
            yield chunk
            if time.monotonic() - checked >= EVENTS_POLL:
                checked = time.monotonic()
                job = jobs.get(job.id, owner)
                if job.status == "cancelled":
                    return job
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()
    return jobs.get(job.id, owner)


def links(job_id: str) -> dict[str, str]:
    return {"self": f"/api/jobs/{job_id}", "events": f"/api/jobs/{job_id}/events"}


def retry_after(job: Job) -> int | None:
    """Seconds a caller polling `job` is told to wait (None once it finished)."""
    return None if job.status in FINISHED else RETRY_AFTER_QUEUED
