"""The service's parts, built once per worker by create_app and held in one typed object
(app.extensions["prompt_builder"], Flask's place for an extension's state)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from flask import Flask, current_app

if TYPE_CHECKING:
    from app.exchange import Facts
    from app.jobs.service import Jobs, JobsUnavailable
    from app.observability.access import AccessLog
    from app.observability.metrics import Instruments
    from app.observability.tracing import Tracing
    from app.security.auth import Credentials
    from app.security.limits import RateLimit
    from app.services import PromptService
    from config.settings import Settings

__all__ = ["KEY", "GraphHandler", "Parts", "parts", "parts_of"]

KEY = "prompt_builder"


class GraphHandler(Protocol):
    """/graphql's handler (app.graph.endpoint.GraphEndpoint), as the pipeline calls it: the
    answer as WSGI parts, and the gateway's facts of it; `admit(n)` counts n operations."""

    def handle(
        self, environ: dict[str, Any], admit: Callable[[int], None]
    ) -> tuple[tuple[str, list[tuple[str, str]], bytes], Facts | None]: ...


@dataclass
class Parts:
    """Everything a request may need, each part None when its setting turns it off."""

    settings: Settings
    started_at: float  # time.time() when the app was built (uptime in /health)
    prompts: PromptService
    access: AccessLog
    credentials: Credentials
    instruments: Instruments | None  # METRICS_ENABLED=false: None
    tracing: Tracing | None  # tracing off: None
    limit: RateLimit | None  # RATE_LIMIT empty: None
    graph: GraphHandler | None  # /graphql (app.graph.endpoint); GRAPHQL_ENABLED=false: None
    jobs: Jobs | None = None  # no CACHE_DIR and no REDIS_URL (nowhere to keep them), or broken: None
    jobs_unavailable: JobsUnavailable | None = None  # asked for, but the store could not be opened
    warm: tuple[int, float] | None = None  # L1 warmed from L2 at start: (answers, seconds)
    draining: bool = False  # SIGTERM received: /health/ready answers 503


def parts_of(app: Flask) -> Parts:
    """The parts of `app`."""
    found: Parts = app.extensions[KEY]
    return found


def parts() -> Parts:
    """The parts of the app handling the current request."""
    return parts_of(current_app)
