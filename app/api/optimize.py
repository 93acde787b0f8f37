"""POST /api/optimize: a rough prompt plus a mode in, an optimized prompt out."""

from flask import Blueprint, Response

from app.api._body import cache_policy, parse_body, prompt_service, respond
from app.schemas import OptimizeRequest

__all__ = ["bp"]

bp = Blueprint("optimize", __name__)


@bp.post("/api/optimize")
def optimize() -> Response:
    body = parse_body(OptimizeRequest)
    answer, completion = prompt_service().optimize(body, cache_policy())
    return respond(answer, completion)
