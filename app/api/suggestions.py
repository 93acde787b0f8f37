"""POST /api/get-*-suggestions: replacements for highlighted text and creative options."""

from flask import Blueprint, Response

from app.api._body import JsonEndpoint
from app.services.operations import OPERATIONS

__all__ = ["CREATIVE", "CUSTOM", "ENHANCEMENT", "bp"]

bp = Blueprint("suggestions", __name__)
ENHANCEMENT = JsonEndpoint(OPERATIONS["get-enhancement-suggestions"])
CUSTOM = JsonEndpoint(OPERATIONS["get-custom-suggestions"])
CREATIVE = JsonEndpoint(OPERATIONS["get-creative-suggestions"])


@bp.post(ENHANCEMENT.path)
def enhancement() -> Response:
    return ENHANCEMENT.view()


@bp.post(CUSTOM.path)
def custom() -> Response:
    return CUSTOM.view()


@bp.post(CREATIVE.path)
def creative() -> Response:
    return CREATIVE.view()
