"""The floor for a cache miss in `make bench`: the least a Flask app can do to answer a prompt
from the model API — parse the body, POST one Messages call through one pooled requests.Session,
return the text. Served by the same gunicorn settings as the service, its overhead over a direct
call is what any Python gateway pays; the service's miss overhead is read as a ratio to it.
"""

from __future__ import annotations

import os

import requests
from flask import Flask, Response, jsonify, request

__all__ = ["create_app"]


def create_app() -> Flask:
    base = os.environ["ANTHROPIC_BASE_URL"].rstrip("/")
    session = requests.Session()  # created after gevent's patching (floor_wsgi.py patches first)
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=1000))
    headers = {"x-api-key": os.environ.get("ANTHROPIC_API_KEY", ""), "anthropic-version": "2023-06-01"}
    app = Flask(__name__)

    @app.post("/api/optimize")
    def optimize() -> Response:
        body = request.get_json()
        message = {
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "system": "Rewrite the prompt for the mode.",
            "messages": [{"role": "user", "content": body["prompt"]}],
        }
        answer = session.post(base + "/v1/messages", json=message, headers=headers, timeout=30).json()
        return jsonify(optimizedPrompt=answer["content"][0]["text"], mode=body["mode"])

    return app
