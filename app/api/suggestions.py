"""POST /api/get-*-suggestions: replacements for highlighted text and creative options."""

from flask import Blueprint, Response

from app.api._body import cache_policy, parse_body, prompt_service, respond
from app.schemas import CreativeRequest, CustomSuggestionsRequest, EnhancementRequest

__all__ = ["bp"]

bp = Blueprint("suggestions", __name__)


@bp.post("/api/get-enhancement-suggestions")
def enhancement() -> Response:
    body = parse_body(EnhancementRequest)
    answer, completion = prompt_service().answer("enhancement", body, cache_policy())
    return respond(answer, completion)


@bp.post("/api/get-custom-suggestions")
def custom() -> Response:
    body = parse_body(CustomSuggestionsRequest)
    answer, completion = prompt_service().answer("custom", body, cache_policy())
    return respond(answer, completion)


@bp.post("/api/get-creative-suggestions")
def creative() -> Response:
    body = parse_body(CreativeRequest)
    answer, completion = prompt_service().answer("creative", body, cache_policy())
    return respond(answer, completion)
