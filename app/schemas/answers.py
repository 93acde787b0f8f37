"""The answers we return and the shapes models must give, as pydantic models."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from app.schemas.requests import Mode, Priority, QuestionField

__all__ = [
    "CreativeAnswer",
    "CreativeResponse",
    "CustomSuggestionsAnswer",
    "CustomSuggestionsResponse",
    "EnhancementAnswer",
    "EnhancementResponse",
    "ErrorResponse",
    "ExplainedSuggestion",
    "JobAccepted",
    "JobError",
    "JobLinks",
    "JobResponse",
    "OptimizeResponse",
    "Question",
    "QuestionsAnswer",
    "QuestionsResponse",
    "SceneChangeAnswer",
    "SceneChangeResponse",
    "Suggestion",
    "TextSuggestion",
    "Usage",
]


# --- what a model must answer (extra keys ignored, shape enforced) -------------------------------


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Question(_Answer):
    id: int | str
    title: str = Field(min_length=1)
    description: str
    field: QuestionField
    examples: list[str] = Field(default_factory=list)


class QuestionsAnswer(_Answer):
    questions: list[Question] = Field(min_length=1, max_length=10)


class Suggestion(_Answer):
    text: str = Field(min_length=1)
    explanation: str | None = None


class TextSuggestion(_Answer):
    text: str = Field(min_length=1)


class ExplainedSuggestion(_Answer):
    text: str = Field(min_length=1)
    explanation: str


class EnhancementAnswer(_Answer):
    suggestions: list[Suggestion] = Field(min_length=1, max_length=20)


class CustomSuggestionsAnswer(_Answer):
    suggestions: list[TextSuggestion] = Field(min_length=1, max_length=20)


class SceneChangeAnswer(_Answer):
    isSceneChange: bool
    confidence: Literal["high", "medium", "low"]
    reasoning: str
    suggestedUpdates: dict[str, str] = Field(default_factory=dict)


class CreativeAnswer(_Answer):
    suggestions: list[ExplainedSuggestion] = Field(min_length=1, max_length=20)


# --- what we answer ------------------------------------------------------------------------------


class Usage(BaseModel):
    inputTokens: int
    outputTokens: int


class _Meta(BaseModel):
    provider: str
    model: str
    usage: Usage


class OptimizeResponse(_Meta):
    optimizedPrompt: str
    mode: Mode


class QuestionsResponse(QuestionsAnswer, _Meta):
    pass


class EnhancementResponse(EnhancementAnswer, _Meta):
    isPlaceholder: bool


class CustomSuggestionsResponse(CustomSuggestionsAnswer, _Meta):
    pass


class SceneChangeResponse(SceneChangeAnswer, _Meta):
    pass


class CreativeResponse(CreativeAnswer, _Meta):
    pass


class JobLinks(BaseModel):
    self: str
    events: str


class JobError(BaseModel):
    error: str
    details: str | None = None
    status: int


class JobAccepted(BaseModel):
    id: str
    status: Literal["queued", "succeeded"]
    task: str
    priority: Priority
    createdAt: str
    links: JobLinks


class JobResponse(BaseModel):
    id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    task: str
    priority: Literal["high", "normal", "low"]
    createdAt: str
    startedAt: str | None = None
    finishedAt: str | None = None
    result: dict[str, JsonValue] | None = None
    error: JobError | None = None
    links: JobLinks


class ErrorResponse(BaseModel):
    error: str
    details: str | None = None
    path: str | None = None
    requestId: str | None = None
