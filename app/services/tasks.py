"""The non-optimize endpoints' prompts: what each asks the model, the JSON it must answer, its limits."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from app.schemas import (
    CreativeAnswer,
    CustomSuggestionsAnswer,
    EnhancementAnswer,
    QuestionsAnswer,
    SceneChangeAnswer,
)

__all__ = ["TASKS", "Task"]

_JSON_RULE = "Answer with one JSON object only, exactly in this shape, and nothing else:"


@dataclass(frozen=True)
class Task:
    """One JSON-answering endpoint: its system prompt, how the user message is built, its limits."""

    name: str
    system: str
    render: Callable[[dict[str, Any]], str]
    answer: type[BaseModel]
    max_tokens: int = 2048
    timeout: float = 30.0
    ttl: int | None = None  # None: CACHE_DEFAULT_TTL
    temperature: float = 0.7


def _section(title: str, text: str | None) -> str:
    return f"<{title}>\n{text}\n</{title}>" if text else ""


def _fields(fields: dict[str, Any]) -> str:
    """One line per field; nested values as compact JSON."""
    return "\n".join(
        f"{key}: {value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}"
        for key, value in fields.items()
    )


def _join(*parts: str) -> str:
    return "\n\n".join(part for part in parts if part)


TASKS: dict[str, Task] = {
    "questions": Task(
        name="questions",
        system=(
            "You help users sharpen a rough prompt by asking exactly three clarifying questions: "
            "one about the aspects to focus on, one about the user's background level, one about "
            "the intended use of the result. Give each 2-4 short example answers.\n"
            f"{_JSON_RULE}\n"
            '{"questions": [{"id": 1, "title": "...", "description": "...", '
            '"field": "specificAspects" | "backgroundLevel" | "intendedUse", "examples": ["..."]}]}'
        ),
        render=lambda i: _section("prompt", i["prompt"]),
        answer=QuestionsAnswer,
        ttl=1800,
    ),
    "enhancement": Task(
        name="enhancement",
        system=(
            "You improve one highlighted passage of a prompt. Propose 3-5 replacements for the "
            "highlighted text only, each fitting seamlessly between the text before and after it, "
            "each with a one-sentence explanation.\n"
            f"{_JSON_RULE}\n"
            '{"suggestions": [{"text": "...", "explanation": "..."}]}'
        ),
        render=lambda i: _join(
            _section("original_user_prompt", i.get("originalUserPrompt")),
            _section("full_prompt", i["fullPrompt"]),
            _section("context_before", i.get("contextBefore")),
            _section("highlighted_text", i["highlightedText"]),
            _section("context_after", i.get("contextAfter")),
        ),
        answer=EnhancementAnswer,
    ),
    "custom": Task(
        name="custom",
        system=(
            "You rewrite one highlighted passage of a prompt as the user asks. Propose 3-5 "
            "replacements for the highlighted text that carry out the user's request and fit the "
            "surrounding prompt.\n"
            f"{_JSON_RULE}\n"
            '{"suggestions": [{"text": "..."}]}'
        ),
        render=lambda i: _join(
            _section("full_prompt", i["fullPrompt"]),
            _section("highlighted_text", i["highlightedText"]),
            _section("user_request", i["customRequest"]),
        ),
        answer=CustomSuggestionsAnswer,
    ),
    "scene": Task(
        name="scene",
        system=(
            "You judge whether an edit to one field of a video prompt changes the scene (a new "
            "place, time or situation) or only refines the current one. When it changes the "
            "scene, suggest new values for the other fields that no longer fit.\n"
            f"{_JSON_RULE}\n"
            '{"isSceneChange": true | false, "confidence": "high" | "medium" | "low", '
            '"reasoning": "...", "suggestedUpdates": {"field": "new value"}}'
        ),
        render=lambda i: _join(
            _section("changed_field", i["changedField"]),
            _section("old_value", i.get("oldValue")),
            _section("new_value", i["newValue"]),
            _section("full_prompt", i["fullPrompt"]),
            _section("affected_fields", _fields(i.get("affectedFields") or {})),
        ),
        answer=SceneChangeAnswer,
        temperature=0.2,
    ),
    "creative": Task(
        name="creative",
        system=(
            "You suggest creative options for one element of a video concept. Give exactly eight "
            "distinct, concrete options for the element type, each with a short explanation of "
            "what it adds, consistent with the concept and context when given.\n"
            f"{_JSON_RULE}\n"
            '{"suggestions": [{"text": "...", "explanation": "..."}]}'
        ),
        render=lambda i: _join(
            _section("element_type", i["elementType"]),
            _section("current_value", i.get("currentValue")),
            _section("context", i.get("context")),
            _section("concept", i.get("concept")),
        ),
        answer=CreativeAnswer,
        ttl=7200,
        temperature=0.9,
    ),
}
