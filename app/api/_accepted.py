"""A job accepted (202): what a JSON endpoint answers to `Prefer: respond-async`, and what
POST /api/jobs answers — the job's id, state and where to follow it."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import redis
from pydantic import BaseModel

from app.exchange import current
from app.jobs import showing
from app.jobs.records import Job
from app.jobs.service import Jobs, JobsUnavailableError
from app.render import Answer, json_parts

__all__ = ["STORE_FAILURES", "accepted", "owner", "submit_async", "wants_async"]

log = logging.getLogger("app.api.jobs")
STORE_FAILURES = (redis.RedisError, sqlite3.Error, OSError)


def owner() -> str:
    """Whose jobs the caller sees: its key id when API keys are configured, else everyone's ("")."""
    exchange = current()
    return exchange.client if exchange is not None and exchange.authenticated else ""


def wants_async(environ: dict[str, Any]) -> bool:
    """Does the request's Prefer header ask for respond-async?"""
    prefer = environ.get("HTTP_PREFER")
    if not prefer:
        return False
    for preference in prefer.split(","):
        token = preference.split(";", 1)[0].split("=", 1)[0].strip().lower()
        if token == "respond-async":
            return True
    return False


def submit_async(jobs: Jobs, task: str, body: BaseModel) -> Answer:
    """The Prefer: respond-async answer of a JSON endpoint: the request as a `normal` job."""
    try:
        job = jobs.submit(task, body, "normal", owner())
    except STORE_FAILURES as exc:
        log.warning("job store unavailable: %s: %s", type(exc).__name__, exc)
        raise JobsUnavailableError(details="the job store cannot be reached; retry shortly", retry_after=2) from None
    return accepted(jobs, job, ("Preference-Applied", "respond-async"))


def accepted(jobs: Jobs, job: Job, *extra: tuple[str, str]) -> Answer:
    """202 Accepted: the job's id, state and where to follow it (Location)."""
    view = showing.view(job)
    body = {key: view[key] for key in ("id", "status", "task", "priority", "createdAt", "links")}
    return json_parts(202, body, [("Location", view["links"]["self"]), *extra])
