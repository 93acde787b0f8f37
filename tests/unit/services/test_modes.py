"""The mode registry and the endpoint prompts: structure, limits, context appendix."""

import pytest

from app.schemas import MODES
from app.services.modes import MODE_REGISTRY, context_appendix
from app.services.tasks import TASKS


def test_every_mode_has_a_template() -> None:
    assert set(MODE_REGISTRY) == set(MODES)
    assert len(MODES) == 8


@pytest.mark.parametrize("name", MODES)
def test_system_prompt_lists_each_section_in_order(name: str) -> None:
    mode = MODE_REGISTRY[name]
    positions = [mode.system.index(f"{i}. {title}") for i, title in enumerate(mode.sections, 1)]
    assert positions == sorted(positions)
    assert "Output only the improved prompt" in mode.system
    assert mode.max_tokens == 4096


def test_limits_per_mode() -> None:
    assert MODE_REGISTRY["video"].timeout == 90
    assert all(m.timeout == 30 for n, m in MODE_REGISTRY.items() if n != "video")
    assert {m.ttl for m in MODE_REGISTRY.values()} == {None}  # CACHE_DEFAULT_TTL, 3600 s by default
    assert TASKS["questions"].ttl == 1800
    assert TASKS["creative"].ttl == 7200
    assert {t.max_tokens for t in TASKS.values()} == {2048}


def test_modes_differ() -> None:
    systems = {name: MODE_REGISTRY[name].system for name in ("reasoning", "research", "socratic", "video", "code")}
    assert len(set(systems.values())) == len(systems)
    assert "5-7" in systems["research"]
    assert "misconceptions" in systems["socratic"].lower()
    assert "150-300 words" in systems["video"]
    assert "over-structure" in systems["reasoning"]


def test_context_appendix() -> None:
    assert context_appendix(None) == ""
    assert context_appendix({"specificAspects": "  ", "backgroundLevel": None}) == ""
    text = context_appendix({"specificAspects": "edge cases", "backgroundLevel": "novice", "intendedUse": "exam"})
    assert "Focus areas: edge cases" in text
    assert "Audience level: novice" in text
    assert "Intended use: exam" in text


@pytest.mark.parametrize("name", TASKS)
def test_task_prompts_name_their_json_shape(name: str) -> None:
    task = TASKS[name]
    assert "JSON" in task.system
    for field in task.answer.model_fields:
        assert f'"{field}"' in task.system
