"""API keys on /api/*, the metrics token on /metrics and /stats, key extraction and comparison."""

from __future__ import annotations

import pytest
from flask import Flask

from app.security.auth import _digest, _match, presented_key
from tests.support import make_app

OPTIMIZE = {"prompt": "x", "mode": "code"}


@pytest.fixture(scope="module")
def locked() -> Flask:
    return make_app({"API_KEYS": "alpha, beta", "METRICS_TOKEN": "scrape"})


@pytest.mark.parametrize(
    ("headers", "found"),
    [
        ({"X-API-Key": " alpha "}, "alpha"),
        ({"Authorization": "Bearer beta"}, "beta"),
        ({"Authorization": "bearer  beta "}, "beta"),
        ({"Authorization": "Basic YWxwaGE="}, None),
        ({"Authorization": "Bearer"}, None),
        ({}, None),
        ({"X-API-Key": "alpha", "Authorization": "Bearer alpha"}, "alpha"),  # the same key twice
        ({"X-API-Key": "alpha", "Authorization": "Basic YWxwaGE="}, "alpha"),  # not a bearer credential
    ],
)
def test_presented_key(headers: dict[str, str], found: str | None) -> None:
    with Flask(__name__).test_request_context(headers=headers) as context:
        assert presented_key(context.request.environ) == found


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": "alpha", "Authorization": "Bearer beta"},
        {"X-API-Key": "beta", "Authorization": "Bearer alpha"},
        {"X-API-Key": "alpha", "Authorization": "Bearer wrong"},
        {"X-API-Key": "wrong", "Authorization": "Bearer alpha"},
    ],
)
def test_two_different_credentials_are_malformed(locked: Flask, headers: dict[str, str]) -> None:
    """Which of two keys is the caller? Neither: 401 API key malformed, whichever is valid."""
    for path, method in (("/api/optimize", "post"), ("/metrics", "get")):
        response = getattr(locked.test_client(), method)(path, json=OPTIMIZE, headers=headers)
        assert response.status_code == 401, (path, headers)
        assert response.get_json()["error"] == "API key malformed"


def test_matching_compares_digests_of_every_allowed_key() -> None:
    allowed = (_digest("alpha"), _digest("beta"))
    assert _match("beta", allowed) == 1 and _match("gamma", allowed) is None and _match("", allowed) is None
    assert _match("\udcff", (_digest("\udcff"),)) == 0  # undecodable bytes never crash the check


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"X-API-Key": "wrong"}, 403), ({"X-API-Key": "alpha"}, 200), ({"Authorization": "Bearer beta"}, 200)],
)
def test_api_routes_need_a_key(locked: Flask, headers: dict[str, str], status: int) -> None:
    response = locked.test_client().post("/api/optimize", json=OPTIMIZE, headers=headers)
    assert response.status_code == status
    if status == 200:
        assert response.headers["Cache-Control"] == "no-store"  # an authenticated answer is private
    else:
        assert set(response.get_json()) == {"error", "details", "requestId"}


def test_operator_routes_need_the_token_and_health_does_not(locked: Flask) -> None:
    client = locked.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"X-API-Key": "alpha"}).status_code == 403  # an API key is not the token
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape"}).status_code == 200
    assert client.get("/health").status_code == 200
    assert client.open("/api/optimize", method="OPTIONS").status_code == 204  # preflights carry no key


def test_open_when_no_keys_are_configured() -> None:
    client = make_app().test_client()
    assert client.post("/api/optimize", json=OPTIMIZE).status_code == 200
    assert client.get("/metrics").status_code == 200
