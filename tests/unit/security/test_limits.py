"""Rate limits in one app (memory storage): exact counts, headers, per-client keys, exemptions."""

from __future__ import annotations

from app import create_app

BODY = {"prompt": "x", "mode": "code"}


def test_limit_headers_and_429() -> None:
    client = create_app({"APP_ENV": "testing", "RATE_LIMIT": "3/minute", "WEB_CONCURRENCY": "1"}).test_client()
    responses = [client.post("/api/optimize", json=BODY) for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r.headers["RateLimit-Remaining"] for r in responses] == ["2", "1", "0", "0"]
    assert responses[0].headers["RateLimit-Limit"] == "3"
    assert responses[0].headers["RateLimit-Policy"] == '3;w=60;comment="counted per worker, 1 worker(s)"'
    assert "Retry-After" not in responses[0].headers
    refused = responses[3]
    assert 1 <= int(refused.headers["Retry-After"]) <= 61  # the window's end, rounded up
    assert refused.get_json()["details"] == "rate limit 3 per 1 minute"


def test_health_metrics_and_preflights_are_never_limited() -> None:
    client = create_app({"APP_ENV": "testing", "RATE_LIMIT": "1/minute"}).test_client()
    assert {client.get("/health").status_code for _ in range(5)} == {200}
    assert {client.open("/api/optimize", method="OPTIONS").status_code for _ in range(5)} == {204}
    assert client.post("/api/optimize", json=BODY).status_code == 200


def test_counted_per_client() -> None:
    client = create_app({"APP_ENV": "testing", "RATE_LIMIT": "1/minute"}).test_client()
    first = client.post("/api/optimize", json=BODY, environ_base={"REMOTE_ADDR": "10.0.0.1"})
    other = client.post("/api/optimize", json=BODY, environ_base={"REMOTE_ADDR": "10.0.0.2"})
    again = client.post("/api/optimize", json=BODY, environ_base={"REMOTE_ADDR": "10.0.0.1"})
    assert (first.status_code, other.status_code, again.status_code) == (200, 200, 429)


def test_no_limit_no_headers() -> None:
    response = create_app({"APP_ENV": "testing"}).test_client().post("/api/optimize", json=BODY)
    assert "RateLimit-Limit" not in response.headers
