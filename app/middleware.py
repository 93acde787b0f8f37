"""Request ids (taken from X-Request-ID when sane, generated otherwise, echoed on every response)
and the request's start time, which metrics, logs and Server-Timing measure from."""

from __future__ import annotations

import re
import time
import uuid

from flask import Flask, Response, g, request

__all__ = ["init_app"]

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _assign_request_id() -> None:
    g.started = time.perf_counter()
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex


def _echo_request_id(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id") or uuid.uuid4().hex
    return response


def init_app(app: Flask) -> None:
    """Register first, so every later hook and error handler sees g.request_id."""
    app.before_request(_assign_request_id)
    app.after_request(_echo_request_id)
