"""Prompt Builder API: the application factory."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Response

from config.settings import Settings, load_settings

__all__ = ["create_app"]


class _Flask(Flask):
    def __init__(self, import_name: str) -> None:
        super().__init__(import_name)
        self._sync: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Flask's answer, remembered: it asks `inspect` whether every hook and view is a
        coroutine function on every request (~2 µs each here, ten a request)."""
        try:
            return self._sync[func]
        except KeyError:
            sync = self._sync[func] = super().ensure_sync(func)
            return sync

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


def create_app(config: Settings | Mapping[str, str] | None = None) -> Flask:
    """Build the app: settings, logging, request ids, errors, the gateway and the API.

    Everything that holds a lock, a pool or a socket is created here, after gevent patching.
    """
    from app import api, errors, middleware
    from app.cache import RedisHealth
    from app.gateway import build_gateway
    from app.gateway.observer import Observers
    from app.observability import access, logs, metrics, tracing
    from app.security import auth, headers, limits
    from app.services import PromptService

    settings = _settings(config)
    app = _Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.extensions["settings"] = settings
    app.extensions["started_at"] = time.time()

    logs.init_app(app, settings)
    middleware.init_app(app)  # first: every later hook and error sees the request id
    errors.init_app(app)
    prometheus = metrics.init_app(app, settings)  # before auth and limits: 401s and 429s are counted too
    access.init_app(app, settings)
    api.init_cached(app, settings)  # wrapped by ProxyFix and the tracing edge, below
    headers.init_app(app, settings)
    auth.init_app(app, settings)  # before the limiter: limits count per API key
    # One view of Redis's health for the limiter, the cache and coalescing: after a failure all
    # three leave it alone for a moment, so a request never waits on it twice.
    redis_health = RedisHealth.for_timeout(settings.redis_socket_timeout) if settings.redis_url else None
    limits.init_app(app, settings, redis_health)  # Flask-Limiter registers itself in app.extensions["limiter"]
    tracer = tracing.init_app(app, settings)
    facts = access.RequestFacts()
    observer = Observers(facts, prometheus) if prometheus is not None else facts
    gateway = build_gateway(settings, observer, tracer, redis_health=redis_health)
    service = PromptService(
        gateway, settings.upstream_timeout, settings.cache_default_ttl, draft_model=settings.llm_draft_model
    )
    app.extensions["prompt_service"] = service
    provider = gateway.upstream.provider
    observer.known(provider.name, provider.model, *service.label_values())
    if prometheus is not None and gateway.l1 is not None:
        prometheus.m.cache_max_bytes.set(gateway.l1.max_bytes)
    api.init_app(app)
    metrics.init_endpoint_series(app)
    return app
