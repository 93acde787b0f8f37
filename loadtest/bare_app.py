"""The baseline for `make bench`: a bare Flask endpoint that parses the JSON body and returns fixed
bytes, nothing else.

Served by the same gunicorn settings as the service, it shows what Flask + gunicorn + gevent
cost on their own, so the service's cached-request throughput can be read as a ratio to it.
"""

from __future__ import annotations

import os

from flask import Flask, Response, request

__all__ = ["create_app"]


def create_app() -> Flask:
    path = os.environ.get("BARE_BODY_FILE")
    body = open(path, "rb").read() if path else b'{"ok": true}'  # noqa: SIM115 (read once at start)
    app = Flask(__name__)

    @app.post("/api/<name>")  # whichever endpoint the bench measures
    def endpoint(name: str) -> Response:
        request.get_json()  # the service parses every body: so does its floor (issue 11's definition)
        return Response(body, mimetype="application/json")

    return app
