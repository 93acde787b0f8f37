"""HTTP as clients expect it: OPTIONS, CORS preflight, and one error shape with `details` for
every error status the service answers itself."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from app.errors import APIError, _subclasses
from tests.support import make_app


def test_options_is_204_with_allow(client: FlaskClient) -> None:
    response = client.open("/api/optimize", method="OPTIONS")
    assert response.status_code == 204
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS, POST"
    assert response.data == b""
    assert "Content-Type" not in response.headers
    assert "Access-Control-Allow-Origin" not in response.headers  # no CORS configured


def test_options_is_a_cors_preflight_when_origins_are_set() -> None:
    client = make_app({"CORS_ORIGINS": "https://ui.example"}).test_client()
    response = client.open(
        "/api/optimize",
        method="OPTIONS",
        headers={"Origin": "https://ui.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "https://ui.example"
    assert response.headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
    assert "Content-Type" in response.headers["Access-Control-Allow-Headers"]


@pytest.mark.parametrize(
    ("send", "status"),
    [
        ({"method": "PUT"}, 405),
        ({"method": "GET"}, 400),  # a GET carries its request in ?body= (app.api._edge)
        ({"method": "POST", "data": "x", "content_type": "text/plain"}, 415),
        ({"method": "POST", "data": "{", "content_type": "application/json"}, 400),
        ({"method": "POST", "json": {"prompt": "x", "mode": "nope"}}, 400),
        ({"method": "POST", "data": b"{" + b" " * (2 * 1024 * 1024) + b"}", "content_type": "application/json"}, 413),
    ],
)
def test_every_error_has_error_details_and_request_id(client: FlaskClient, send: dict, status: int) -> None:
    response = client.open("/api/optimize", **send)
    assert response.status_code == status
    body = response.get_json()
    assert set(body) == {"error", "details", "requestId"}
    assert body["error"] and body["details"] and body["requestId"] == response.headers["X-Request-ID"]
    if status == 405:
        assert response.headers["Allow"] == "GET, HEAD, OPTIONS, POST"
        assert body["details"] == "allowed methods: GET, HEAD, OPTIONS, POST"


def test_not_found_keeps_the_shape_and_adds_the_path(client: FlaskClient) -> None:
    body = client.get("/nowhere").get_json()
    assert set(body) == {"error", "details", "requestId", "path"} and body["path"] == "/nowhere"


def test_every_error_class_says_something_in_details() -> None:
    for cls in _subclasses(APIError):
        error = cls()
        assert error.details == cls.default_details and error.details, cls.__name__
        assert cls(details="specific").details == "specific"


def test_an_answer_is_the_bytes_jsonify_would_write(client: FlaskClient) -> None:
    """Answers are encoded without jsonify; the bytes and Content-Type stay jsonify's."""
    from flask import jsonify

    body = {"prompt": 'naïve café ☕ — "quoted" \\ back', "mode": "code"}
    first = client.post("/api/optimize", json=body)
    hit = client.post("/api/optimize", json=body)
    assert first.headers["X-Cache"] == "MISS" and hit.headers["X-Cache"] == "HIT"
    with client.application.app_context():
        expected = jsonify(first.get_json())
    for response in (first, hit):
        assert response.data == expected.get_data()
        assert response.headers["Content-Type"] == expected.headers["Content-Type"] == "application/json"
        assert int(response.headers["Content-Length"]) == len(expected.get_data())
    assert "Age" in hit.headers and "Age" not in first.headers
