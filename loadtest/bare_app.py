"""The baseline for `make bench`: a bare Flask endpoint returning fixed bytes, nothing else.

Served by the same gunicorn settings as the service, it shows what Flask + gunicorn + gevent
cost on their own, so the service's cached-request throughput can be read as a ratio to it.
"""

from __future__ import annotations

import os

from flask import Flask, Response

__all__ = ["create_app"]


def create_app() -> Flask:
    path = os.environ.get("BARE_BODY_FILE")
    body = open(path, "rb").read() if path else b'{"ok": true}'  # noqa: SIM115 (read once at start)
    app = Flask(__name__)

    @app.post("/api/optimize")
    def optimize() -> Response:
        return Response(body, mimetype="application/json")

    return app
