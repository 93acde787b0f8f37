"""POST /api/generate-questions: three clarifying questions for a rough prompt."""

from flask import Blueprint, Response

from app.api._body import JsonEndpoint
from app.schemas import QuestionsRequest

__all__ = ["QUESTIONS", "bp"]

bp = Blueprint("questions", __name__)
QUESTIONS = JsonEndpoint(
    "/api/generate-questions", QuestionsRequest, lambda prompts, body, policy: prompts.answer("questions", body, policy)
)


@bp.post(QUESTIONS.path)
def generate_questions() -> Response:
    return QUESTIONS.view()
