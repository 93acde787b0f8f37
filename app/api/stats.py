"""GET /stats: this instance's cache, coalescing, breaker, upstream and memory figures as JSON,
summed over its workers. Behind nginx each request reaches one instance: `instance` names it."""

import socket

from flask import Blueprint, Response, jsonify

from app.errors import error_response
from app.observability.stats import server_stats
from app.parts import parts

__all__ = ["bp"]

bp = Blueprint("stats", __name__)


@bp.get("/stats")
def stats() -> Response:
    found = parts()
    if found.instruments is None:
        return error_response(404, "Statistics are off", "METRICS_ENABLED is false on this server")
    return jsonify(
        scope="instance",
        instance=f"{socket.gethostname()}:{found.settings.port}",
        **server_stats(found.instruments.registry, found.prompts.breaker_state),
    )
