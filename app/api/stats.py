"""GET /stats: the whole server's cache, coalescing, breaker, upstream and memory figures as JSON."""

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
    return jsonify(server_stats(registry, prompt_service().breaker_state))
