"""Request validation: every limit, every enum, unknown keys, and the one JSON error shape."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from app.api._body import decode_body
from app.errors import ValidationFailedError
from app.schemas import MODES, JobSubmission, OptimizeRequest

VALID: dict[str, dict[str, Any]] = {
    "/api/optimize": {
        "prompt": "Explain recursion",
        "mode": "reasoning",
        "context": {"specificAspects": "a", "backgroundLevel": "b", "intendedUse": "c"},
    },
    "/api/generate-questions": {"prompt": "Plan a trip"},
    "/api/get-enhancement-suggestions": {
        "highlightedText": "fast",
        "contextBefore": "make it ",
        "contextAfter": " please",
        "fullPrompt": "make it fast please",
        "originalUserPrompt": "speed",
    },
    "/api/get-custom-suggestions": {
        "highlightedText": "fast",
        "customRequest": "more formal",
        "fullPrompt": "make it fast",
    },
    "/api/detect-scene-change": {
        "changedField": "location",
        "newValue": "Paris",
        "oldValue": "Rome",
        "fullPrompt": "A walk in Rome",
        "affectedFields": {"time": "noon"},
    },
    "/api/get-creative-suggestions": {
        "elementType": "mood",
        "currentValue": "calm",
        "context": "beach",
        "concept": "a quiet morning",
    },
}

# (path, dotted field, max length, required)
LIMITS = [
    ("/api/optimize", "prompt", 10_000, True),
    ("/api/optimize", "context.specificAspects", 5_000, False),
    ("/api/optimize", "context.backgroundLevel", 1_000, False),
    ("/api/optimize", "context.intendedUse", 1_000, False),
    ("/api/generate-questions", "prompt", 10_000, True),
    ("/api/get-enhancement-suggestions", "highlightedText", 10_000, True),
    ("/api/get-enhancement-suggestions", "contextBefore", 5_000, False),
    ("/api/get-enhancement-suggestions", "contextAfter", 5_000, False),
    ("/api/get-enhancement-suggestions", "fullPrompt", 50_000, True),
    ("/api/get-enhancement-suggestions", "originalUserPrompt", 10_000, False),
    ("/api/get-custom-suggestions", "highlightedText", 10_000, True),
    ("/api/get-custom-suggestions", "customRequest", 1_000, True),
    ("/api/get-custom-suggestions", "fullPrompt", 50_000, True),
    ("/api/detect-scene-change", "newValue", 10_000, True),
    ("/api/detect-scene-change", "oldValue", 10_000, False),
    ("/api/detect-scene-change", "fullPrompt", 50_000, True),
    ("/api/detect-scene-change", "changedField", 200, True),
    ("/api/get-creative-suggestions", "currentValue", 5_000, False),
    ("/api/get-creative-suggestions", "context", 5_000, False),
    ("/api/get-creative-suggestions", "concept", 10_000, False),
]


def _with(path: str, field: str, value: Any = None, *, delete: bool = False) -> dict[str, Any]:
    body = copy.deepcopy(VALID[path])
    *parents, leaf = field.split(".")
    target = body
    for part in parents:
        target = target[part]
    if delete:
        del target[leaf]
    else:
        target[leaf] = value
    return body


def _assert_error(response: Any, status: int, mentions: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert isinstance(body["error"], str) and body["error"]
    assert body["requestId"] == response.headers["X-Request-ID"]
    if mentions is not None:
        assert mentions in body.get("details", ""), body
    return body  # type: ignore[no-any-return]


def test_every_invalid_field_is_named_not_only_the_first(client: FlaskClient) -> None:
    body = _assert_error(client.post("/api/detect-scene-change", json={}), 400)
    assert body["details"] == "changedField: Field required; newValue: Field required; fullPrompt: Field required"
    mixed = {"prompt": "", "mode": "nonsense", "context": {"backgroundLevel": 7}, "extra": 1}
    details = _assert_error(client.post("/api/optimize", json=mixed), 400)["details"]
    for field in ("prompt:", "mode:", "context.backgroundLevel:", "extra:"):
        assert field in details, details
    assert set(body) == {"error", "details", "requestId"}  # the one error shape


@pytest.mark.parametrize("path", VALID)
def test_valid_body_is_answered(client: FlaskClient, path: str) -> None:
    response = client.post(path, json=VALID[path])
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["provider"] == "template"


@pytest.mark.parametrize(("path", "field", "limit", "required"), LIMITS)
def test_length_limits(client: FlaskClient, path: str, field: str, limit: int, required: bool) -> None:
    assert client.post(path, json=_with(path, field, "x" * limit)).status_code == 200
    body = _assert_error(client.post(path, json=_with(path, field, "x" * (limit + 1))), 400, field.split(".")[-1])
    assert body["error"] == "Validation failed"


@pytest.mark.parametrize(("path", "field", "limit", "required"), LIMITS)
def test_required_fields(client: FlaskClient, path: str, field: str, limit: int, required: bool) -> None:
    response = client.post(path, json=_with(path, field, delete=True))
    if required:
        _assert_error(response, 400, field)
        _assert_error(client.post(path, json=_with(path, field, "")), 400, field)
        _assert_error(client.post(path, json=_with(path, field, "   ")), 400, field)
    else:
        assert response.status_code == 200


@pytest.mark.parametrize("path", VALID)
def test_unknown_keys_are_rejected(client: FlaskClient, path: str) -> None:
    _assert_error(client.post(path, json={**VALID[path], "surprise": 1}), 400, "surprise")


def test_unknown_context_key_is_rejected(client: FlaskClient) -> None:
    _assert_error(client.post("/api/optimize", json=_with("/api/optimize", "context.extra", "x")), 400, "extra")


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_is_accepted(client: FlaskClient, mode: str) -> None:
    response = client.post("/api/optimize", json={"prompt": "Summarise a paper", "mode": mode})
    assert response.status_code == 200
    assert response.get_json()["mode"] == mode


@pytest.mark.parametrize("mode", ["default", "REASONING", "", None, 3])
def test_unknown_modes_are_rejected(client: FlaskClient, mode: Any) -> None:
    _assert_error(client.post("/api/optimize", json={"prompt": "x", "mode": mode}), 400, "mode")


@pytest.mark.parametrize("element", ["subject", "action", "location", "time", "mood", "style", "event"])
def test_every_element_type_is_accepted(client: FlaskClient, element: str) -> None:
    response = client.post("/api/get-creative-suggestions", json={"elementType": element})
    assert response.status_code == 200
    assert len(response.get_json()["suggestions"]) == 8


def test_unknown_element_type_is_rejected(client: FlaskClient) -> None:
    _assert_error(client.post("/api/get-creative-suggestions", json={"elementType": "sound"}), 400, "elementType")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (123, "number for a string"),
        (["a"], "array for a string"),
        ({"a": 1}, "object for a string"),
        (True, "bool for a string"),
        ("a\x00b", "NUL byte"),
        ("\ud800", "lone surrogate"),
    ],
)
def test_wrong_types_and_bad_characters(client: FlaskClient, value: Any, why: str) -> None:
    body = json.dumps({"prompt": value, "mode": "code"})  # ASCII escapes keep the surrogate intact
    _assert_error(client.post("/api/optimize", data=body, content_type="application/json"), 400, "prompt")


def test_null_context_and_null_old_value_are_allowed(client: FlaskClient) -> None:
    assert client.post("/api/optimize", json={"prompt": "x", "mode": "code", "context": None}).status_code == 200
    body = _with("/api/detect-scene-change", "oldValue", None)
    assert client.post("/api/detect-scene-change", json=body).status_code == 200


def test_context_must_be_an_object(client: FlaskClient) -> None:
    _assert_error(client.post("/api/optimize", json={"prompt": "x", "mode": "code", "context": "a"}), 400, "context")


@pytest.mark.parametrize("body", [b"{", b'{"prompt": "x",}', b"", b"nul", b'{"prompt": NaN}', b"\xff\xfe{}"])
def test_malformed_json_is_400(client: FlaskClient, body: bytes) -> None:
    response = client.post("/api/optimize", data=body, content_type="application/json")
    assert _assert_error(response, 400)["error"] == "Malformed JSON"


@pytest.mark.parametrize("body", [b"[]", b'"text"', b"42", b"null"])
def test_non_object_body_is_400(client: FlaskClient, body: bytes) -> None:
    _assert_error(client.post("/api/optimize", data=body, content_type="application/json"), 400, "object")


def test_deep_nesting_is_a_clean_400(client: FlaskClient) -> None:
    body = b'{"prompt": "x", "mode": "code", "context": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert client.post("/api/optimize", data=body, content_type="application/json").status_code == 400


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_wrong_content_type_is_415(client: FlaskClient, content_type: str) -> None:
    response = client.post("/api/optimize", data=b'{"prompt": "x", "mode": "code"}', content_type=content_type)
    _assert_error(response, 415)


def test_missing_content_type_is_415(client: FlaskClient) -> None:
    _assert_error(client.post("/api/optimize", data=b'{"prompt": "x", "mode": "code"}'), 415)


def test_body_over_the_limit_is_413(client: FlaskClient) -> None:
    body = b'{"prompt": "' + b"x" * (1024 * 1024) + b'", "mode": "code"}'
    _assert_error(client.post("/api/optimize", data=body, content_type="application/json"), 413)


def test_unknown_path_is_404_with_path(client: FlaskClient) -> None:
    body = _assert_error(client.get("/api/nothing-here"), 404)
    assert body["path"] == "/api/nothing-here"


def test_wrong_method_is_405(client: FlaskClient) -> None:
    response = client.put("/api/optimize")
    _assert_error(response, 405)
    assert "POST" in response.headers["Allow"]


def test_request_id_is_echoed_or_generated(client: FlaskClient) -> None:
    echoed = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["X-Request-ID"] == "abc-123"
    generated = client.get("/health", headers={"X-Request-ID": "bad id <script>"})
    assert generated.headers["X-Request-ID"] != "bad id <script>"
    assert len(generated.headers["X-Request-ID"]) == 32
    error = client.post("/api/optimize", json={}, headers={"X-Request-ID": "req-9"})
    assert error.get_json()["requestId"] == "req-9" == error.headers["X-Request-ID"]


SCENE = VALID["/api/detect-scene-change"]


@pytest.mark.parametrize(
    "affected",
    [
        {"time": "noon"},
        {"lighting": {"key": "warm", "fill": ["soft", "low"]}, "count": 3, "ok": True, "none": None},
        {"": "empty key", "with space": 1.5, "emoji 🎬": ["a", {"b": [1, 2]}]},
        {"deep": {"a": {"b": {"c": {"d": {"e": "f"}}}}}},
    ],
)
def test_affected_fields_take_any_json_object_like_the_original(client: FlaskClient, affected: dict) -> None:
    response = client.post("/api/detect-scene-change", json={**SCENE, "affectedFields": affected})
    assert response.status_code == 200, response.get_json()
    assert isinstance(response.get_json()["suggestedUpdates"], dict)


def test_affected_fields_nesting_is_bounded(client: FlaskClient) -> None:
    from app.schemas import AFFECTED_FIELDS_MAX_DEPTH

    def nested(depth: int) -> dict:
        value: dict = {"leaf": "x"}
        for _ in range(depth - 1):
            value = {"k": value}
        return value

    ok = client.post("/api/detect-scene-change", json={**SCENE, "affectedFields": nested(AFFECTED_FIELDS_MAX_DEPTH)})
    assert ok.status_code == 200
    too_deep = nested(AFFECTED_FIELDS_MAX_DEPTH + 1)
    deep = client.post("/api/detect-scene-change", json={**SCENE, "affectedFields": too_deep})
    assert deep.status_code == 400
    assert "nested deeper than 16 levels" in deep.get_json()["details"]


@pytest.mark.parametrize("affected", [["a list"], "text", 3])
def test_affected_fields_must_still_be_an_object(client: FlaskClient, affected: object) -> None:
    response = client.post("/api/detect-scene-change", json={**SCENE, "affectedFields": affected})
    assert response.status_code == 400


def _with_unknown(count: int, where: str) -> dict[str, Any]:
    junk = {f"k{i:05d}": "v" for i in range(count)}
    optimize = copy.deepcopy(VALID["/api/optimize"])
    return {
        "top": {**optimize, **junk},
        "context": {**optimize, "context": {**optimize["context"], **junk}},
        "job": {"task": "optimize", **junk, "input": optimize},
        "job input": {"task": "optimize", "input": {**optimize, **junk}},
    }[where]


def _refused(body: dict[str, Any], model: type[Any]) -> str:
    with pytest.raises(ValidationFailedError) as raised:
        decode_body(json.dumps(body).encode(), model)
    return raised.value.details


@pytest.mark.parametrize("where", ["top", "context", "job", "job input"])
@pytest.mark.parametrize("count", [21, 60_000])
def test_many_unknown_keys_are_refused_before_validation(where: str, count: int) -> None:
    """Refused by a set lookup per key (not an error object per key in pydantic), wherever they
    hide; the answer names the first 20 and counts the rest. (decode_body is what both the
    pipeline's handler and Flask's view call.)"""
    details = _refused(_with_unknown(count, where), JobSubmission if where.startswith("job") else OptimizeRequest)
    assert details.count("Extra inputs are not permitted") == 20
    assert details.endswith(f"; and {count - 20} more unknown keys")
    assert "k00000" in details and f"k{count - 1:05d}" not in details


@pytest.mark.parametrize("where", ["top", "context"])
def test_a_few_unknown_keys_are_named_every_one(client: FlaskClient, where: str) -> None:
    response = client.post("/api/optimize", json=_with_unknown(20, where))
    assert response.status_code == 400
    details = response.get_json()["details"]
    assert details.count("Extra inputs are not permitted") == 20 and "more unknown keys" not in details
    assert _refused(_with_unknown(20, "job input"), JobSubmission).count("Extra inputs") == 20
