"""POST /api/optimize: a rough prompt plus a mode in, an optimized prompt out; and
POST /api/optimize-stream: the same answer as server-sent events, as the model writes it."""

from flask import Blueprint, Response, g

from app.api._body import cache_policy, parse_body, prompt_service, respond
from app.schemas import OptimizeRequest

__all__ = ["bp"]

bp = Blueprint("optimize", __name__)


@bp.post("/api/optimize")
def optimize() -> Response:
    body = parse_body(OptimizeRequest)
    answer, completion = prompt_service().optimize(body, cache_policy())
    return respond(answer, completion)


@bp.post("/api/optimize-stream")
def optimize_stream() -> Response:
    body = parse_body(OptimizeRequest)  # bad input: the same 4xx JSON errors, before any stream
    stream = prompt_service().optimize_stream(body, cache_policy(), g.request_id)
    response = Response(stream.events, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    response.headers["X-Cache"] = stream.cache_status
    return response
