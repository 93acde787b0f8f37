"""POST /api/optimize: a rough prompt plus a mode in, an optimized prompt out; and
POST /api/optimize-stream: the same answer as server-sent events, as the model writes it."""

from flask import Blueprint, Response, request

from app.api._body import JsonEndpoint, cache_policy, caller, read_body
from app.exchange import current
from app.parts import parts
from app.schemas import OptimizeRequest
from app.services.operations import OPERATIONS

__all__ = ["OPTIMIZE", "bp"]

bp = Blueprint("optimize", __name__)
OPTIMIZE = JsonEndpoint(OPERATIONS["optimize"])


@bp.route(OPTIMIZE.path, methods=["GET", "POST"])
def optimize() -> Response:
    return OPTIMIZE.view()


@bp.post("/api/optimize-stream")
def optimize_stream() -> Response:
    found = parts()
    environ = request.environ
    body = read_body(environ, OptimizeRequest, found.settings.max_body_bytes)  # bad input: 4xx JSON, before any stream
    exchange = current()
    origin = exchange.request_id if exchange is not None else ""
    stream = found.prompts.optimize_stream(body, cache_policy(environ), origin, caller(environ))
    response = Response(stream.events, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    response.headers["X-Cache"] = stream.cache_status
    if exchange is not None:
        exchange.cache_status, exchange.cache_seconds = stream.cache_status, stream.cache_seconds
    return response
