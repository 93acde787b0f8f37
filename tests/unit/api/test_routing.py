"""The one route decision: the router's answer is Werkzeug's for every spelling, and Flask is
handed it rather than routing again."""

from __future__ import annotations

import itertools

import pytest
from flask import Flask
from werkzeug.exceptions import HTTPException

from app.routing import Router
from tests.support import make_app

SPELLINGS = [
    "/api/optimize",
    "//api/optimize",
    "/api//optimize",
    "/api/optimize/",
    "/api/./optimize",
    "/API/optimize",
    "/api/jobs/abc",
    "//api/jobs/abc/events",
    "/api/jobs//abc",
    "/metrics",
    "//metrics",
    "/stats/",
    "/health//ready",
    "/",
    "",
    "/openapi.json",
]
METHODS = ["GET", "POST", "DELETE", "OPTIONS", "HEAD", "PUT"]


@pytest.fixture(scope="module")
def app() -> Flask:
    return make_app()


@pytest.mark.parametrize(("path", "method"), list(itertools.product(SPELLINGS, METHODS)))
def test_the_router_says_what_werkzeug_says(app: Flask, path: str, method: str) -> None:
    found = Router(app.url_map).route({"PATH_INFO": path, "REQUEST_METHOD": method, "QUERY_STRING": ""})
    adapter = app.url_map.bind("localhost", "/")
    try:
        rule, args = adapter.match(path or "/", method, return_rule=True)
    except HTTPException as exc:
        assert found.rule is None and type(found.error) is type(exc)
        return
    assert (found.rule, found.args, found.error) == (rule, args, None)
    assert found.guard == (
        "api" if rule.rule.startswith("/api/") else "operator" if rule.rule in ("/metrics", "/stats") else "open"
    )


def test_flask_takes_the_pipelines_route(app: Flask) -> None:
    """A doubled leading slash reaches the same view with the same arguments, by one decision."""
    client = app.test_client()
    plain = client.get("/api/jobs/0123456789abcdef0123456789abcdef")
    # (as a server passes it: the test client would read "//api" as a host)
    doubled = client.get("/", environ_overrides={"PATH_INFO": "//api/jobs/0123456789abcdef0123456789abcdef"})
    assert plain.status_code == doubled.status_code
    assert plain.get_json()["error"] == doubled.get_json()["error"]


def test_a_request_that_did_not_come_through_the_pipeline_is_routed_by_flask_itself(app: Flask) -> None:
    """Flask's own request contexts (a test_request_context, a CLI) still route as Flask does."""
    with app.test_request_context("/health/live", method="GET") as context:
        context.match_request()
        assert context.request.url_rule is not None and context.request.url_rule.endpoint == "health.live"


def test_a_redirect_names_the_canonical_path_and_keeps_the_query(app: Flask) -> None:
    response = app.test_client().post(
        "/", environ_overrides={"PATH_INFO": "/api//optimize", "QUERY_STRING": "a=1"}, json={}
    )
    assert response.status_code == 308 and response.headers["Location"] == "/api/optimize?a=1"
    assert response.get_json()["location"] == "/api/optimize?a=1"
