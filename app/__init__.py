"""Prompt Builder API: the application factory."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Response
from flask.ctx import RequestContext

from app.routing import RoutedRequestContext
from config.settings import Settings, load_settings

__all__ = ["WARM_SECONDS", "create_app"]

# The longest a worker spends warming its L1 from L2 at start (before it serves: reported by
# /health/ready as cacheWarm).
WARM_SECONDS = 2.0


class _Flask(Flask):
    def __init__(self, import_name: str) -> None:
        super().__init__(import_name, static_folder=None)  # no static files: every route a fixed path
        self._sync: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Flask's answer, remembered: it asks `inspect` whether every hook and view is a
        coroutine function on every request (docs/performance.md)."""
        try:
            return self._sync[func]
        except KeyError:
            sync = self._sync[func] = super().ensure_sync(func)
            return sync

    def request_context(self, environ: dict[str, Any]) -> RequestContext:
        """A request context that takes the pipeline's route (app.routing) rather than routing
        the path a second time: one route decision for the guard and the handler."""
        return RoutedRequestContext(self, environ)

    def make_default_options_response(self) -> Response:
        """OPTIONS answers 204 No Content with `Allow` (Flask's default is 200 with an empty
        text/html body); CORS preflight headers are added by app.security.headers."""
        response = super().make_default_options_response()
        response.status_code = 204
        response.headers["Allow"] = ", ".join(sorted(response.allow))  # stable order
        response.headers.pop("Content-Type", None)
        return response


def _settings(config: Settings | Mapping[str, str] | None) -> Settings:
    if isinstance(config, Settings):
        return config
    return load_settings(config)  # None: os.environ; a mapping: exactly those variables


def _jobs(settings: Settings, prompts: Any, metrics: Any, credentials: Any, clients: Any) -> Any:
    """The job service: on SQLite in CACHE_DIR (one machine), on Redis (a fleet: the process's
    `clients`); None when there is nowhere to keep jobs (no CACHE_DIR, no REDIS_URL) or Redis is
    a Cluster."""
    import os
    import sqlite3

    from app.jobs.queue import JobQueue, RunnerLock
    from app.jobs.redis_store import RedisJobStore
    from app.jobs.service import Jobs, JobsUnavailable
    from app.jobs.sqlite_store import SqliteJobStore
    from app.services.operations import OPERATIONS

    lock = None
    if clients is not None:
        if clients.cluster:
            logging.getLogger("app.jobs").warning(
                "jobs are not available with a Redis Cluster (taking a job reaches keys its script cannot declare)"
            )
            return None
        # The plain twin: the job store has no way to serve without Redis, so a pause after a
        # cache failure must not fail its calls (each is still bounded by the call timeout).
        store: Any = RedisJobStore(clients.service.plain, settings.redis_prefix, reader=clients.reader)
    elif settings.cache_dir:
        path = os.path.join(settings.cache_dir, "jobs.sqlite3")
        try:
            store = SqliteJobStore(path)
        except (OSError, sqlite3.Error) as exc:  # asked for, and broken: refused, and readiness fails
            why = f"{path}: {type(exc).__name__}: {exc}"
            logging.getLogger("app.jobs").error("the job store cannot be opened (%s): job requests refused", why)
            return JobsUnavailable(why)
        lock = RunnerLock(os.path.join(settings.cache_dir, "jobs.runner.lock"))
    else:
        return None
    return Jobs(
        store,
        JobQueue(store, settings.job_lease_seconds),
        prompts,
        OPERATIONS,
        result_ttl=settings.job_result_ttl,
        queue_max=settings.job_queue_max,
        lease_seconds=settings.job_lease_seconds,
        concurrency=settings.job_concurrency,
        metrics=metrics,
        runner_lock=lock,
        scope_of=lambda owner: credentials.scoped_name(owner.removeprefix("key:") if owner else None),
    )


def create_app(config: Settings | Mapping[str, str] | None = None) -> Flask:
    """Build the app: settings, logging, the gateway, the API, and the request pipeline in front.

    Everything that holds a lock, a pool or a socket is created here, after gevent patching.
    """
    from app import api, errors
    from app.observability import logs, metrics
    from app.parts import KEY
    from app.pipeline import Pipeline
    from app.security import headers

    settings = _settings(config)
    app = _Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]

    logs.init_app(app, settings)
    errors.init_app(app)
    instruments = metrics.init_app(app, settings)  # serves /metrics
    found = app.extensions[KEY] = _parts(settings, instruments)
    api.init_app(app)
    if found.graph is not None:  # answered by the pipeline (app.graph.endpoint): a rule, no view
        app.add_url_rule("/graphql", endpoint="graphql", methods=["GET", "POST"])
    if instruments is not None:
        metrics.init_endpoint_series(app, instruments.metrics)
    app.wsgi_app = headers.wrap_proxy_fix(Pipeline(app, found, app.wsgi_app), settings)  # type: ignore[method-assign]
    return app


def _parts(settings: Settings, instruments: Any) -> Any:
    """Every part a request may need, built and wired once (app.parts.Parts)."""
    from app.cache import RedisHealth
    from app.cache.clients import RedisClients
    from app.gateway import build_gateway
    from app.jobs.service import JobsUnavailable
    from app.observability import access, tracing
    from app.parts import Parts
    from app.security import auth, limits
    from app.services import PromptService

    traces = tracing.init_app(settings)
    # One view of Redis's health for the limiter, the cache and coalescing: after a failure all
    # three leave it alone for a moment, so a request never waits on it twice.
    health = RedisHealth.for_timeout(settings.redis_socket_timeout) if settings.redis_url else None
    clients = (
        RedisClients(settings.redis_url, health, settings.redis_socket_timeout, settings.redis_connections)
        if health is not None
        else None
    )
    observer = instruments.observer if instruments is not None else None
    gateway = build_gateway(settings, observer, traces.tracer if traces is not None else None, clients=clients)
    prompts = PromptService(
        gateway,
        settings.upstream_timeout,
        settings.cache_default_ttl,
        draft_model=settings.llm_draft_model,
        stale_seconds=settings.stale_if_error_seconds,
    )
    if instruments is not None:
        instruments.observer.known(gateway.core.provider_name, gateway.core.model, *prompts.label_values())
        instruments.metrics.cache_max_bytes.set(gateway.core.cache_max_bytes)
    credentials = auth.Credentials(settings)
    graph = None
    if settings.graphql_enabled:
        from app.graph.endpoint import GraphEndpoint

        graph = GraphEndpoint(
            prompts,
            max_body=settings.max_body_bytes,
            most=settings.graphql_max_operations,
            introspection=settings.graphql_introspection,
            counted=instruments.graph_counted if instruments is not None else None,
        )
    jobs = _jobs(settings, prompts, instruments.metrics if instruments is not None else None, credentials, clients)
    return Parts(
        settings=settings,
        started_at=time.time(),
        prompts=prompts,
        access=access.AccessLog(settings.llm_provider, settings.llm_model),
        credentials=credentials,
        instruments=instruments,
        tracing=traces,
        limit=limits.RateLimit(settings, health) if limits.RateLimit.wanted(settings) else None,
        graph=graph,
        jobs=None if isinstance(jobs, JobsUnavailable) else jobs,
        jobs_unavailable=jobs if isinstance(jobs, JobsUnavailable) else None,
        warm=_warm(gateway, settings),
    )


def _warm(gateway: Any, settings: Settings) -> tuple[int, float] | None:
    """Warm L1 from L2 for at most WARM_SECONDS: (answers, seconds), None without L2."""
    started = time.perf_counter()
    warmed = gateway.core.warm(settings.cache_warm_entries, WARM_SECONDS)
    if gateway.l2 is None:
        return None
    warm = (warmed, round(time.perf_counter() - started, 3))
    if warmed:
        logging.getLogger("app.cache").info("warmed L1 with %d answers from L2 in %.3f s", *warm)
    return warm
