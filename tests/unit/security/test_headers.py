"""Security headers on every response, CORS only for configured origins, proxy trust by hop count."""

from __future__ import annotations

import pytest

from tests.support import make_app


@pytest.mark.parametrize("path", ["/health", "/api/optimize", "/nowhere"])
def test_security_headers_everywhere(path: str) -> None:
    response = make_app().test_client().get(path)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_cors_for_listed_origins_only() -> None:
    client = make_app({"CORS_ORIGINS": "https://a.example"}).test_client()
    allowed = client.get("/health", headers={"Origin": "https://a.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://a.example"
    assert "Origin" in allowed.headers.get_all("Vary")
    assert "X-Cache" in allowed.headers["Access-Control-Expose-Headers"]
    other = client.get("/health", headers={"Origin": "https://b.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_cors_wildcard() -> None:
    client = make_app({"CORS_ORIGINS": "*"}).test_client()
    assert (
        client.get("/health", headers={"Origin": "https://any.example"}).headers["Access-Control-Allow-Origin"] == "*"
    )


@pytest.mark.parametrize(("hops", "seen"), [("0", "10.0.0.9"), ("1", "203.0.113.7")])
def test_forwarded_for_is_believed_only_for_trusted_hops(hops: str, seen: str) -> None:
    app = make_app({"TRUSTED_PROXIES": hops})

    @app.get("/_ip")
    def _ip() -> str:
        from flask import request

        return request.remote_addr or ""

    response = app.test_client().get(
        "/_ip", headers={"X-Forwarded-For": "203.0.113.7"}, environ_base={"REMOTE_ADDR": "10.0.0.9"}
    )
    assert response.get_data(as_text=True) == seen
