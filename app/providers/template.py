"""The offline provider: deterministic structured prompts and schema-valid answers, no network."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Generator
from typing import Any

from app.providers.base import LLMRequest, ProviderResult

__all__ = ["TemplateProvider"]


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _optimize(inputs: dict[str, Any]) -> str:
    prompt = inputs["prompt"].strip()
    context = inputs.get("context") or {}
    bodies = [draft.replace("{prompt}", prompt) for draft in inputs["drafts"]]
    lines = [
        f"{label}: {value.strip()}"
        for label, key in (
            ("Focus on", "specificAspects"),
            ("Audience", "backgroundLevel"),
            ("Intended use", "intendedUse"),
        )
        if (value := context.get(key)) and value.strip()
    ]
    if lines:
        at = inputs["context_at"]
        bodies[at] = "\n".join([bodies[at], *lines]) if at else "\n".join([bodies[0], *lines])
    return "\n\n".join(f"## {title}\n{body}" for title, body in zip(inputs["sections"], bodies, strict=True))


def _questions(inputs: dict[str, Any]) -> dict[str, Any]:
    topic = _short(inputs["prompt"], 60)
    return {
        "questions": [
            {
                "id": 1,
                "title": "What should the answer focus on?",
                "description": f"Which aspects of “{topic}” matter most to you?",
                "field": "specificAspects",
                "examples": ["Practical steps", "Underlying theory", "Trade-offs"],
            },
            {
                "id": 2,
                "title": "How familiar are you with the subject?",
                "description": "This sets the depth and vocabulary of the answer.",
                "field": "backgroundLevel",
                "examples": ["Beginner", "Intermediate", "Expert"],
            },
            {
                "id": 3,
                "title": "What will you use the result for?",
                "description": "The intended use shapes format and level of detail.",
                "field": "intendedUse",
                "examples": ["A report", "A lesson", "A decision"],
            },
        ]
    }


def _enhancement(inputs: dict[str, Any]) -> dict[str, Any]:
    text = _short(inputs["highlightedText"], 60)
    return {
        "suggestions": [
            {"text": f"{text} (state the expected outcome)", "explanation": "Makes the goal checkable."},
            {"text": f"{text}, with one concrete example", "explanation": "Examples reduce ambiguity."},
            {"text": f"Precisely: {text}", "explanation": "Signals that precision matters."},
        ]
    }


def _custom(inputs: dict[str, Any]) -> dict[str, Any]:
    text = _short(inputs["highlightedText"], 60)
    request = _short(inputs["customRequest"], 40)
    return {
        "suggestions": [
            {"text": f"{text} — {request}"},
            {"text": f"{request}: {text}"},
            {"text": f"{text} ({request}, concisely)"},
        ]
    }


_SCENE_FIELDS = ("location", "setting", "time", "era", "place", "scene")


def _scene(inputs: dict[str, Any]) -> dict[str, Any]:
    field = inputs["changedField"].lower()
    old = (inputs.get("oldValue") or "").strip()
    changed = any(word in field for word in _SCENE_FIELDS) and old != inputs["newValue"].strip()
    affected = inputs.get("affectedFields") or {}
    return {
        "isSceneChange": changed,
        "confidence": "medium" if changed else "low",
        "reasoning": (
            f"'{inputs['changedField']}' sets the scene and its value changed."
            if changed
            else f"'{inputs['changedField']}' refines the current scene without replacing it."
        ),
        # Free-form values (objects, numbers) are suggested as their JSON text.
        "suggestedUpdates": {key: _as_text(value) for key, value in affected.items() if changed and value},
    }


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


_ANGLES = ("vivid", "minimal", "unexpected", "classic", "cinematic", "intimate", "bold", "quiet")


def _article(word: str) -> str:
    """'an unexpected', 'a vivid': the article by the word's first letter (enough for _ANGLES)."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def _creative(inputs: dict[str, Any]) -> dict[str, Any]:
    kind = inputs["elementType"]
    base = _short(inputs.get("currentValue") or inputs.get("concept") or kind, 40)
    return {
        "suggestions": [
            {"text": f"{angle.capitalize()} {kind}: {base}", "explanation": f"Gives the {kind} {_article(angle)} feel."}
            for angle in _ANGLES
        ]
    }


_BUILDERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "questions": _questions,
    "enhancement": _enhancement,
    "custom": _custom,
    "scene": _scene,
    "creative": _creative,
}


class TemplateProvider:
    """Builds answers locally from the request's validated inputs; costs no tokens."""

    name = "template"

    def __init__(self, model: str = "template-v1") -> None:
        self.model = model

    def stream(
        self, request: LLMRequest, timeout: float, model: str | None = None
    ) -> Generator[str | ProviderResult, None, None]:
        """The offline answer in pieces of about a line, so a stream shows without a key."""
        result = self.complete(request, timeout)
        yield from re.findall(r"[^\n]*\n|[^\n]+$", result.text)
        yield result

    def complete(self, request: LLMRequest, timeout: float) -> ProviderResult:
        if request.task == "optimize":
            text = _optimize(request.inputs)
        else:
            text = json.dumps(_BUILDERS[request.task](request.inputs), ensure_ascii=False)
        return ProviderResult(text=text, input_tokens=0, output_tokens=0, model=self.model)

    def close(self) -> None:
        """Nothing to release."""
