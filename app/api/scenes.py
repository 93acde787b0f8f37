"""POST /api/detect-scene-change: does an edit to a video prompt change the scene?"""

from flask import Blueprint, Response

from app.api._body import JsonEndpoint
from app.services.operations import OPERATIONS

__all__ = ["SCENE", "bp"]

bp = Blueprint("scenes", __name__)
SCENE = JsonEndpoint(OPERATIONS["detect-scene-change"])


@bp.route(SCENE.path, methods=["GET", "POST"])
def detect_scene_change() -> Response:
    return SCENE.view()
