"""Prompt Builder API: the application factory."""

from __future__ import annotations

import time
from collections.abc import Mapping

from flask import Flask

from config.settings import Settings, load_settings

__all__ = ["create_app"]


def _settings(config: Settings | Mapping[str, str] | None) -> Settings:
    if isinstance(config, Settings):
        return config
    return load_settings(config)  # None: os.environ; a mapping: exactly those variables


def create_app(config: Settings | Mapping[str, str] | None = None) -> Flask:
    """Build the app: settings, logging, request ids, errors, the gateway and the API.

    Everything that holds a lock, a pool or a socket is created here, after gevent patching.
    """
    from app import api, errors, middleware
    from app.gateway import build_gateway
    from app.observability import logs
    from app.services import PromptService

    settings = _settings(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.extensions["settings"] = settings
    app.extensions["started_at"] = time.time()

    logs.init_app(app, settings)
    middleware.init_app(app)
    errors.init_app(app)
    app.extensions["prompt_service"] = PromptService(build_gateway(settings), settings.upstream_timeout)
    api.init_app(app)
    return app
