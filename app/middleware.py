"""Request ids (taken from X-Request-ID when sane, generated otherwise, echoed on every response)
and the request's start time, which metrics, logs and Server-Timing measure from."""

from __future__ import annotations

import os
import re
import time
from typing import Any

from flask import Flask, Response, g, request

__all__ = ["init_app", "new_request_id", "request_id"]

_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def new_request_id() -> str:
    """Return 32 random hex digits: what uuid4().hex gives, without building a UUID (0.6 µs, not 3)."""
    return os.urandom(16).hex()


def request_id(environ: dict[str, Any]) -> str:
    """Return the caller's X-Request-ID when it is safe to echo and log, else a new id."""
    incoming = environ.get("HTTP_X_REQUEST_ID")
    return incoming if incoming and _SAFE_ID.fullmatch(incoming) else new_request_id()


def _assign_request_id() -> None:
    facts = g._get_current_object()
    facts.started = time.perf_counter()
    facts.request_id = request_id(request.environ)


def _echo_request_id(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id") or new_request_id()
    return response


def init_app(app: Flask) -> None:
    """Register first, so every later hook and error handler sees g.request_id."""
    app.before_request(_assign_request_id)
    app.after_request(_echo_request_id)
