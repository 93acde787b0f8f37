"""Health probes: shapes, readiness while draining, and no upstream involvement."""

from flask import Flask
from flask.testing import FlaskClient

from app.parts import parts_of
from tests.support import make_app


def test_health_shapes(client: FlaskClient) -> None:
    health = client.get("/health").get_json()
    assert health["status"] == "healthy" and health["uptime"] >= 0 and health["timestamp"].endswith("Z")
    assert client.get("/health/live").get_json()["status"] == "alive"
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.get_json()["checks"]["circuitBreaker"]["state"] == "closed"


def test_not_ready_while_draining(app: Flask, client: FlaskClient) -> None:
    parts_of(app).draining = True  # what the worker sets on SIGTERM
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.get_json()["status"] == "not ready"
    assert client.get("/health/live").status_code == 200


def test_metrics_off_means_no_metrics_routes() -> None:

    client = make_app({"METRICS_ENABLED": "false"}).test_client()
    assert client.get("/stats").status_code == 404
    assert client.get("/metrics").status_code == 404
    assert client.post("/api/optimize", json={"prompt": "x", "mode": "code"}).status_code == 200


def test_stats_in_one_process(client: FlaskClient) -> None:
    client.post("/api/optimize", json={"prompt": "x", "mode": "code"})
    client.post("/api/optimize", json={"prompt": "x", "mode": "code"})
    stats = client.get("/stats").get_json()
    assert stats["scope"] == "instance" and stats["instance"].endswith(":3001")  # behind nginx: which one
    assert (stats["cache"]["hits"], stats["cache"]["misses"], stats["cache"]["sets"]) == (1, 1, 1)
    assert stats["requests"]["byStatus"] == {"200": 2}


def test_openapi_describes_the_operator_endpoints_too(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    for path in ("/health", "/health/live", "/health/ready", "/metrics", "/stats"):
        assert set(spec["paths"][path]) == {"get"}, path
        assert str(client.get(path).status_code) in spec["paths"][path]["get"]["responses"]
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
