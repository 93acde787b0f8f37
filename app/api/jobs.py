"""Jobs: POST /api/jobs, GET /api/jobs/{id}, GET /api/jobs/{id}/events, DELETE /api/jobs/{id};
and `Prefer: respond-async` on the six JSON endpoints (RFC 7240), which submits the same job.

With API keys configured a job is visible only to the key that submitted it (any other key gets
404, as for an id that never existed)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, request

from app.api._accepted import STORE_FAILURES, accepted, owner
from app.api._body import read_body
from app.errors import APIError
from app.jobs import showing
from app.jobs.service import Jobs, JobsUnavailableError
from app.parts import parts
from app.render import Answer, json_parts
from app.schemas import JobSubmission

__all__ = ["bp"]

bp = Blueprint("jobs", __name__)
log = logging.getLogger(__name__)


def _available(view: Callable[..., Response]) -> Callable[..., Response]:
    """The store out of reach (Redis down, the disk failing): 503 with Retry-After, never a 500."""

    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Response:
        try:
            return view(*args, **kwargs)
        except STORE_FAILURES as exc:
            log.warning("job store unavailable: %s: %s", type(exc).__name__, exc)
            raise JobsUnavailableError(
                details="the job store cannot be reached; retry shortly", retry_after=2
            ) from None

    return guarded


def _jobs() -> Jobs:
    found = parts()
    if found.jobs_unavailable is not None:
        raise found.jobs_unavailable.error()
    if found.jobs is None:
        raise JobsUnavailableError()
    return found.jobs


def _respond(answer: Answer) -> Response:
    status, headers, data = answer
    return Response(data, status, headers)


@bp.post("/api/jobs")
@_available
def submit() -> Response:
    jobs = _jobs()
    submission = read_body(request.environ, JobSubmission, parts().settings.max_body_bytes).root
    job = jobs.submit(submission.task, submission.input, submission.priority, owner())
    return _respond(accepted(jobs, job))


@bp.get("/api/jobs/<job_id>")
@_available
def status(job_id: str) -> Response:
    jobs = _jobs()
    job = jobs.get(job_id, owner())
    wait = showing.retry_after(job)
    return _respond(json_parts(200, showing.view(job), [("Retry-After", str(wait))] if wait else None))


@bp.delete("/api/jobs/<job_id>")
@_available
def cancel(job_id: str) -> Response:
    jobs = _jobs()
    job = jobs.cancel(job_id, owner())
    return _respond(json_parts(200, showing.view(job)))


@bp.get("/api/jobs/<job_id>/events")
@_available
def events(job_id: str) -> Response:
    jobs = _jobs()
    caller = owner()
    job = jobs.get(job_id, caller)  # unknown: 404 JSON, before any stream
    response = Response(_guarded(showing.events(jobs, job, caller)), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


def _guarded(events: Any) -> Any:
    """A job that expires while followed ends the stream with an error event, not a broken one."""
    from app.gateway.replay import error_event

    try:
        yield from events
    except APIError as error:
        yield error_event(error, "")
    except STORE_FAILURES as exc:
        log.warning("job store unavailable while following a job: %s: %s", type(exc).__name__, exc)
        yield error_event(JobsUnavailableError(details="the job store cannot be reached; retry shortly"), "")
