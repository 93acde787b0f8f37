"""Turn a model's text into a validated payload; anything else is the upstream's fault (502)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from app.errors import InvalidAnswerError

__all__ = ["json_answer", "text_answer"]

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def _extract_json(text: str) -> Any:
    candidates = [text.strip()]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])  # prose around a bare object
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    raise InvalidAnswerError(details="the model's answer is not valid JSON")


def json_answer(model: type[BaseModel]) -> Callable[[str], dict[str, Any]]:
    """Return a parser that extracts JSON (code fences tolerated) and checks it against `model`."""

    def parse(text: str) -> dict[str, Any]:
        try:
            return model.model_validate(_extract_json(text)).model_dump(exclude_none=True)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "answer"
            raise InvalidAnswerError(
                details=f"the model's JSON has the wrong shape ({where}: {first['msg']})"
            ) from None

    return parse


def text_answer(text: str) -> str:
    """Return the model's text without surrounding whitespace; empty text is invalid."""
    text = text.strip()
    if not text:
        raise InvalidAnswerError(details="the model's answer is empty")
    return text
