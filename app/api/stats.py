"""GET /stats: this instance's cache, coalescing, breaker, upstream and memory figures as JSON,
summed over its workers. Behind nginx each request reaches one instance: `instance` names it."""

import socket

from flask import Blueprint, Response, current_app, jsonify

from app.api._body import prompt_service
from app.errors import error_response
from app.observability.stats import server_stats

__all__ = ["bp"]

bp = Blueprint("stats", __name__)


@bp.get("/stats")
def stats() -> Response:
    registry = current_app.extensions.get("metrics_registry")
    if registry is None:
        return error_response(404, "Statistics are off", "METRICS_ENABLED is false on this server")
    settings = current_app.extensions["settings"]
    return jsonify(
        scope="instance",
        instance=f"{socket.gethostname()}:{settings.port}",
        **server_stats(registry, prompt_service().breaker_state),
    )
