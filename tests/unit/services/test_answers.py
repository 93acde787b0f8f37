"""Parsing model text into payloads: fences and prose tolerated, wrong shapes refused as 502."""

import json

import pytest

from app.errors import InvalidAnswerError
from app.schemas import CreativeAnswer, SceneChangeAnswer
from app.services.answers import json_answer, text_answer

SCENE = {"isSceneChange": True, "confidence": "high", "reasoning": "moved", "suggestedUpdates": {"time": "dawn"}}


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(SCENE),
        f"```json\n{json.dumps(SCENE)}\n```",
        f"```\n{json.dumps(SCENE)}\n```",
        f"Here is the answer:\n{json.dumps(SCENE)}\nHope it helps.",
    ],
)
def test_json_is_found(text: str) -> None:
    assert json_answer(SceneChangeAnswer)(text) == SCENE


def test_extra_keys_are_dropped() -> None:
    assert json_answer(SceneChangeAnswer)(json.dumps({**SCENE, "debug": 1})) == SCENE


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("not json at all", "not valid JSON"),
        ('{"isSceneChange": "perhaps", "confidence": "high", "reasoning": "r"}', "isSceneChange"),
        ('{"isSceneChange": true, "confidence": "sure", "reasoning": "r"}', "confidence"),
        ("[1, 2, 3]", "wrong shape"),
    ],
)
def test_invalid_answers_are_502(text: str, needle: str) -> None:
    with pytest.raises(InvalidAnswerError) as info:
        json_answer(SceneChangeAnswer)(text)
    assert info.value.status_code == 502
    assert needle in (info.value.details or "")


def test_suggestions_need_explanations() -> None:
    with pytest.raises(InvalidAnswerError):
        json_answer(CreativeAnswer)('{"suggestions": [{"text": "a"}]}')


def test_text_answer() -> None:
    assert text_answer("  hello \n") == "hello"
    with pytest.raises(InvalidAnswerError):
        text_answer("   ")
