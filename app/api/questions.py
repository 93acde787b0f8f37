"""POST /api/generate-questions: three clarifying questions for a rough prompt."""

from flask import Blueprint, Response

from app.api._body import cache_policy, parse_body, prompt_service, respond
from app.schemas import QuestionsRequest

__all__ = ["bp"]

bp = Blueprint("questions", __name__)


@bp.post("/api/generate-questions")
def generate_questions() -> Response:
    body = parse_body(QuestionsRequest)
    answer, completion = prompt_service().answer("questions", body, cache_policy())
    return respond(answer, completion)
