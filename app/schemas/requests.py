"""The request bodies we accept (and the jobs that carry them), as pydantic models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, RootModel, WithJsonSchema

__all__ = [
    "AFFECTED_FIELDS_MAX_DEPTH",
    "MODES",
    "CreativeJob",
    "CreativeRequest",
    "CustomSuggestionsJob",
    "CustomSuggestionsRequest",
    "ElementType",
    "EnhancementJob",
    "EnhancementRequest",
    "JobSubmission",
    "Mode",
    "OptimizeContext",
    "OptimizeJob",
    "OptimizeRequest",
    "Optional1k",
    "Optional5k",
    "Optional10k",
    "Priority",
    "QuestionField",
    "QuestionsJob",
    "QuestionsRequest",
    "Required10k",
    "Required50k",
    "SceneChangeJob",
    "SceneChangeRequest",
]

Mode = Literal["code", "text", "learning", "video", "reasoning", "research", "socratic", "optimize"]
MODES: tuple[str, ...] = Mode.__args__  # type: ignore[attr-defined]
ElementType = Literal["subject", "action", "location", "time", "mood", "style", "event"]
QuestionField = Literal["specificAspects", "backgroundLevel", "intendedUse"]


def _clean_text(value: str) -> str:
    # A NUL byte or a lone surrogate cannot be encoded for the upstream; refuse it here, as a 400.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


_BLANK = " \t\n\r\f\v"  # ASCII whitespace: the same set in the validator and the schema pattern


def _not_blank(value: str) -> str:
    if not value.strip(_BLANK):
        raise ValueError("must not be blank")
    return value


# The validators above, written as patterns for the OpenAPI document (clients and fuzzers read
# them); the validators enforce them, with clearer messages than a regex failure.
_NO_NUL = r"^[^\x00]*$"
_NO_NUL_NOT_BLANK = r"^[^\x00]*[^\x00\t\n\r\f\v ][^\x00]*$"


def _text(max_length: int, *, required: bool = False) -> object:
    checks = [AfterValidator(_clean_text)] + ([AfterValidator(_not_blank)] if required else [])
    field = Field(
        min_length=1 if required else 0,
        max_length=max_length,
        json_schema_extra={"pattern": _NO_NUL_NOT_BLANK if required else _NO_NUL},
    )
    return Annotated[str, field, *checks]


Required10k = _text(10_000, required=True)
Required50k = _text(50_000, required=True)
Optional10k = _text(10_000)
Optional5k = _text(5_000)
Optional1k = _text(1_000)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class OptimizeContext(_Request):
    specificAspects: Optional5k | None = None  # type: ignore[valid-type]
    backgroundLevel: Optional1k | None = None  # type: ignore[valid-type]
    intendedUse: Optional1k | None = None  # type: ignore[valid-type]


class OptimizeRequest(_Request):
    prompt: Required10k  # type: ignore[valid-type]
    mode: Mode
    context: OptimizeContext | None = None


class QuestionsRequest(_Request):
    prompt: Required10k  # type: ignore[valid-type]


class EnhancementRequest(_Request):
    highlightedText: Required10k  # type: ignore[valid-type]
    contextBefore: Optional5k = ""  # type: ignore[valid-type]
    contextAfter: Optional5k = ""  # type: ignore[valid-type]
    fullPrompt: Required50k  # type: ignore[valid-type]
    originalUserPrompt: Optional10k = ""  # type: ignore[valid-type]


class CustomSuggestionsRequest(_Request):
    highlightedText: Required10k  # type: ignore[valid-type]
    customRequest: _text(1_000, required=True)  # type: ignore[valid-type]
    fullPrompt: Required50k  # type: ignore[valid-type]


AFFECTED_FIELDS_MAX_DEPTH = 16


def _shallow_enough(value: dict[str, Any]) -> dict[str, Any]:
    """Refuse nesting deeper than AFFECTED_FIELDS_MAX_DEPTH (the body size bounds the rest)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > AFFECTED_FIELDS_MAX_DEPTH:
            raise ValueError(f"nested deeper than {AFFECTED_FIELDS_MAX_DEPTH} levels")
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return value


# Any JSON object, as the original service accepted: free-form keys and values, nested objects and
# arrays included; bounded by MAX_BODY_BYTES and a nesting depth.
_AffectedFields = Annotated[
    dict[str, JsonValue],
    AfterValidator(_shallow_enough),
    WithJsonSchema(
        {"type": "object", "description": f"any JSON object, nested at most {AFFECTED_FIELDS_MAX_DEPTH} levels"}
    ),
]


class SceneChangeRequest(_Request):
    changedField: _text(200, required=True)  # type: ignore[valid-type]
    newValue: Required10k  # type: ignore[valid-type]
    oldValue: Optional10k | None = None  # type: ignore[valid-type]
    fullPrompt: Required50k  # type: ignore[valid-type]
    affectedFields: _AffectedFields | None = None  # type: ignore[valid-type]


class CreativeRequest(_Request):
    elementType: ElementType
    currentValue: Optional5k = ""  # type: ignore[valid-type]
    context: Optional5k = ""  # type: ignore[valid-type]
    concept: Optional10k = ""  # type: ignore[valid-type]


Priority = Literal["high", "normal", "low"]


class _Job(_Request):
    priority: Priority = "normal"


class OptimizeJob(_Job):
    task: Literal["optimize"]
    input: OptimizeRequest


class QuestionsJob(_Job):
    task: Literal["generate-questions"]
    input: QuestionsRequest


class EnhancementJob(_Job):
    task: Literal["get-enhancement-suggestions"]
    input: EnhancementRequest


class CustomSuggestionsJob(_Job):
    task: Literal["get-custom-suggestions"]
    input: CustomSuggestionsRequest


class SceneChangeJob(_Job):
    task: Literal["detect-scene-change"]
    input: SceneChangeRequest


class CreativeJob(_Job):
    task: Literal["get-creative-suggestions"]
    input: CreativeRequest


class JobSubmission(RootModel[Any]):
    """POST /api/jobs: `task` names the endpoint, `input` is exactly that endpoint's body."""

    root: Annotated[
        OptimizeJob | QuestionsJob | EnhancementJob | CustomSuggestionsJob | SceneChangeJob | CreativeJob,
        Field(discriminator="task"),
    ]
