"""POST /api/get-*-suggestions: replacements for highlighted text and creative options."""

from flask import Blueprint, Response

from app.api._body import JsonEndpoint
from app.services.operations import OPERATIONS

__all__ = ["CREATIVE", "CUSTOM", "ENHANCEMENT", "bp"]

bp = Blueprint("suggestions", __name__)
ENHANCEMENT = JsonEndpoint(OPERATIONS["get-enhancement-suggestions"])
CUSTOM = JsonEndpoint(OPERATIONS["get-custom-suggestions"])
CREATIVE = JsonEndpoint(OPERATIONS["get-creative-suggestions"])


@bp.route(ENHANCEMENT.path, methods=["GET", "POST"])
def enhancement() -> Response:
    return ENHANCEMENT.view()


@bp.route(CUSTOM.path, methods=["GET", "POST"])
def custom() -> Response:
    return CUSTOM.view()


@bp.route(CREATIVE.path, methods=["GET", "POST"])
def creative() -> Response:
    return CREATIVE.view()
