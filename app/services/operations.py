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
    CustomSuggestionsRequest,
    EnhancementRequest,
    OptimizeRequest,
    QuestionsRequest,
    SceneChangeRequest,
)

if TYPE_CHECKING:
    from app.gateway import Completion
    from app.services.prompts import CachePolicy, PromptService
    from app.tenancy import Caller

__all__ = ["OPERATIONS", "Operation"]

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Operation(Generic[M]):
    name: str
    model: type[M]
    answer: Callable[[PromptService, M, CachePolicy, Caller], tuple[dict[str, Any], Completion]]


def _task(task: str) -> Callable[[PromptService, Any, CachePolicy, Caller], tuple[dict[str, Any], Completion]]:
    return lambda prompts, body, policy, caller: prompts.answer(task, body, policy, caller)


OPERATIONS: dict[str, Operation[Any]] = {
    operation.name: operation
    for operation in (
        Operation(
            "optimize", OptimizeRequest, lambda prompts, body, policy, caller: prompts.optimize(body, policy, caller)
        ),
        Operation("generate-questions", QuestionsRequest, _task("questions")),
        Operation("get-enhancement-suggestions", EnhancementRequest, _task("enhancement")),
        Operation("get-custom-suggestions", CustomSuggestionsRequest, _task("custom")),
        Operation("detect-scene-change", SceneChangeRequest, _task("scene")),
        Operation("get-creative-suggestions", CreativeRequest, _task("creative")),
    )
}
