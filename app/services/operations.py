"""The six operations the service answers, by name: the body each takes (its pydantic model)
and the service call that answers it. Every door shares this registry — the REST endpoints
(`/api/<name>`), jobs (a job's task is an operation's name) — so none can drift from another."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from app.schemas import (
    CreativeRequest,
    CreativeResponse,
    CustomSuggestionsRequest,
    CustomSuggestionsResponse,
    EnhancementRequest,
    EnhancementResponse,
    OptimizeRequest,
    OptimizeResponse,
    QuestionsRequest,
    QuestionsResponse,
    SceneChangeRequest,
    SceneChangeResponse,
)

if TYPE_CHECKING:
    from app.gateway import Completion
    from app.services.prompts import CachePolicy, PromptService
    from app.tenancy import Caller

__all__ = ["OPERATIONS", "Operation"]

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Operation(Generic[M]):
    """One of the six operations: its name (its path is /api/<name>), the body it takes, how
    the service answers it, the answer's shape, and a line saying what it does."""

    name: str
    model: type[M]
    answer: Callable[[PromptService, M, CachePolicy, Caller], tuple[dict[str, Any], Completion]]
    reply: type[BaseModel]
    summary: str

    @property
    def path(self) -> str:
        return f"/api/{self.name}"

    @property
    def operation_id(self) -> str:
        """The name in camelCase (generate-questions → generateQuestions)."""
        first, *rest = self.name.split("-")
        return first + "".join(word.title() for word in rest)


def _task(task: str) -> Callable[[PromptService, Any, CachePolicy, Caller], tuple[dict[str, Any], Completion]]:
    return lambda prompts, body, policy, caller: prompts.answer(task, body, policy, caller)


OPERATIONS: dict[str, Operation[Any]] = {
    operation.name: operation
    for operation in (
        Operation(
            "optimize",
            OptimizeRequest,
            lambda prompts, body, policy, caller: prompts.optimize(body, policy, caller),
            OptimizeResponse,
            "Optimize a prompt for a mode",
        ),
        Operation(
            "generate-questions", QuestionsRequest, _task("questions"), QuestionsResponse, "Ask clarifying questions"
        ),
        Operation(
            "get-enhancement-suggestions",
            EnhancementRequest,
            _task("enhancement"),
            EnhancementResponse,
            "Improve highlighted text",
        ),
        Operation(
            "get-custom-suggestions",
            CustomSuggestionsRequest,
            _task("custom"),
            CustomSuggestionsResponse,
            "Rewrite highlighted text as asked",
        ),
        Operation(
            "detect-scene-change",
            SceneChangeRequest,
            _task("scene"),
            SceneChangeResponse,
            "Judge whether an edit changes the scene",
        ),
        Operation(
            "get-creative-suggestions",
            CreativeRequest,
            _task("creative"),
            CreativeResponse,
            "Suggest creative options",
        ),
    )
}
