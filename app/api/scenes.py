"""POST /api/detect-scene-change: does an edit to a video prompt change the scene?"""

from flask import Blueprint, Response

from app.api._body import cache_policy, parse_body, prompt_service, respond
from app.schemas import SceneChangeRequest

__all__ = ["bp"]

bp = Blueprint("scenes", __name__)


@bp.post("/api/detect-scene-change")
def detect_scene_change() -> Response:
    body = parse_body(SceneChangeRequest)
    answer, completion = prompt_service().answer("scene", body, cache_policy())
    return respond(answer, completion)
