"""POST /api/generate-questions: three clarifying questions for a rough prompt."""

from flask import Blueprint, Response

from app.api._body import JsonEndpoint
from app.services.operations import OPERATIONS

__all__ = ["QUESTIONS", "bp"]

bp = Blueprint("questions", __name__)
QUESTIONS = JsonEndpoint(OPERATIONS["generate-questions"])


@bp.route(QUESTIONS.path, methods=["GET", "POST"])
def generate_questions() -> Response:
    return QUESTIONS.view()
