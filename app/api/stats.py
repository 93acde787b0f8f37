"""GET /stats: the whole server's cache, coalescing, breaker, upstream and memory figures as JSON."""

from flask import Blueprint, Response, current_app, jsonify

from app.errors import APIError
from app.observability.stats import server_stats

__all__ = ["bp"]

bp = Blueprint("stats", __name__)


@bp.get("/stats")
def stats() -> Response:
    registry = current_app.extensions.get("metrics_registry")
    if registry is None:
        raise APIError("Metrics are disabled (METRICS_ENABLED=false)", details="no figures to report")
    breaker = current_app.extensions["prompt_service"].gateway.upstream.breaker
    return jsonify(server_stats(registry, breaker.state))
