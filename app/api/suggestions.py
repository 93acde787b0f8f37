"""POST /api/get-*-suggestions: replacements for highlighted text and creative options."""

from flask import Blueprint, Response

from app.api._body import JsonEndpoint
from app.schemas import CreativeRequest, CustomSuggestionsRequest, EnhancementRequest

__all__ = ["CREATIVE", "CUSTOM", "ENHANCEMENT", "bp"]

bp = Blueprint("suggestions", __name__)
ENHANCEMENT = JsonEndpoint(
    "/api/get-enhancement-suggestions",
    EnhancementRequest,
    lambda prompts, body, policy: prompts.answer("enhancement", body, policy),
)
CUSTOM = JsonEndpoint(
    "/api/get-custom-suggestions",
    CustomSuggestionsRequest,
    lambda prompts, body, policy: prompts.answer("custom", body, policy),
)
CREATIVE = JsonEndpoint(
    "/api/get-creative-suggestions",
    CreativeRequest,
    lambda prompts, body, policy: prompts.answer("creative", body, policy),
)


@bp.post(ENHANCEMENT.path)
def enhancement() -> Response:
    return ENHANCEMENT.view()


@bp.post(CUSTOM.path)
def custom() -> Response:
    return CUSTOM.view()


@bp.post(CREATIVE.path)
def creative() -> Response:
    return CREATIVE.view()
