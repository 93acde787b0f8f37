"""The offline provider: deterministic, structured, schema-valid for every endpoint."""

import json
import re

import pytest

from app.providers.base import LLMRequest
from app.providers.template import TemplateProvider
from app.services.modes import MODE_REGISTRY
from app.services.tasks import TASKS
from tests.unit.api.test_validation import VALID

TASK_INPUTS = {
    "questions": VALID["/api/generate-questions"],
    "enhancement": VALID["/api/get-enhancement-suggestions"],
    "custom": VALID["/api/get-custom-suggestions"],
    "scene": VALID["/api/detect-scene-change"],
    "creative": VALID["/api/get-creative-suggestions"],
}


def _request(task: str, inputs: dict) -> LLMRequest:
    return LLMRequest(task=task, mode=task, system="", messages=(), max_tokens=10, inputs=inputs)


@pytest.mark.parametrize("mode", sorted(MODE_REGISTRY))
def test_optimize_builds_every_section(mode: str) -> None:
    spec = MODE_REGISTRY[mode]
    sections = spec.sections
    inputs = {
        "prompt": "Teach me chess openings",
        "context": {"backgroundLevel": "beginner"},
        "sections": list(sections),
        "drafts": list(spec.drafts),
        "context_at": spec.context_at,
    }
    result = TemplateProvider().complete(_request("optimize", inputs), timeout=1)
    assert [line[3:] for line in result.text.splitlines() if line.startswith("## ")] == list(sections)
    assert "Teach me chess openings" in result.text
    assert "Audience: beginner" in result.text
    assert all(draft.replace("{prompt}", "Teach me chess openings") in result.text for draft in spec.drafts)
    assert (result.input_tokens, result.output_tokens) == (0, 0)
    assert result.text == TemplateProvider().complete(_request("optimize", inputs), timeout=1).text


@pytest.mark.parametrize("task", sorted(TASK_INPUTS))
def test_json_tasks_are_schema_valid(task: str) -> None:
    result = TemplateProvider().complete(_request(task, TASK_INPUTS[task]), timeout=1)
    TASKS[task].answer.model_validate(json.loads(result.text))


def test_scene_change_depends_on_the_field() -> None:
    provider = TemplateProvider()
    moved = json.loads(provider.complete(_request("scene", TASK_INPUTS["scene"]), 1).text)
    refined = json.loads(provider.complete(_request("scene", {**TASK_INPUTS["scene"], "changedField": "mood"}), 1).text)
    assert moved["isSceneChange"] is True
    assert refined["isSceneChange"] is False


def test_creative_explanations_use_the_right_article() -> None:
    inputs = {"elementType": "mood", "currentValue": "calm", "concept": "a lighthouse"}
    result = TemplateProvider().complete(_request("creative", inputs), timeout=1)
    explanations = [s["explanation"] for s in json.loads(result.text)["suggestions"]]
    assert "Gives the mood an unexpected feel." in explanations
    assert "Gives the mood an intimate feel." in explanations
    assert "Gives the mood a vivid feel." in explanations
    assert not [e for e in explanations if re.search(r"\ba [aeiou]", e)]
