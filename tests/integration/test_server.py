"""A real gunicorn + gevent server, every endpoint with every provider, every error status."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
import requests

from tests.support import BIN, ROOT, FakeUpstreamProcess, Server, provider_server, service_env
from tests.unit.api.test_validation import VALID

pytestmark = pytest.mark.integration

PROVIDERS = ["template", "anthropic", "openai"]


@pytest.fixture(scope="module", params=PROVIDERS)
def served(request: pytest.FixtureRequest, _fake_upstream_process: FakeUpstreamProcess) -> Iterator[tuple[str, Server]]:
    with provider_server(request.param, _fake_upstream_process) as served:
        yield served


@pytest.mark.parametrize("path", VALID)
def test_every_endpoint(served: tuple[str, Server], fake_upstream: FakeUpstreamProcess, path: str) -> None:
    provider, server = served
    response = requests.post(server.url + path, json=VALID[path], headers={"X-Request-ID": "it-1"}, timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["provider"] == provider
    assert response.headers["X-Request-ID"] == "it-1"
    assert response.headers["X-Cache"] == "MISS"
    assert fake_upstream.calls() == (0 if provider == "template" else 1)
    if provider != "template":
        assert body["usage"]["inputTokens"] > 0
    if path == "/api/optimize":
        assert body["optimizedPrompt"] and body["mode"] == "reasoning"


def test_health_endpoints_never_call_upstream(served: tuple[str, Server], fake_upstream: FakeUpstreamProcess) -> None:
    _, server = served
    health = requests.get(server.url + "/health", timeout=5).json()
    assert health["status"] == "healthy"
    assert 0 < health["uptime"] < 600  # seconds since this module's server started, not a timestamp
    assert requests.get(server.url + "/health/live", timeout=5).json()["status"] == "alive"
    ready = requests.get(server.url + "/health/ready", timeout=5)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert fake_upstream.calls() == 0


def test_openapi_document(served: tuple[str, Server]) -> None:
    spec = requests.get(served[1].url + "/openapi.json", timeout=5).json()
    assert spec["openapi"].startswith("3.1")
    assert set(VALID) <= set(spec["paths"])
    assert spec["components"]["schemas"]["OptimizeRequest"]["additionalProperties"] is False


@pytest.mark.parametrize(
    ("send", "status"),
    [
        ({"data": b"{", "headers": {"Content-Type": "application/json"}}, 400),
        ({"json": {"prompt": "x", "mode": "default"}}, 400),
        ({"data": b"prompt=x", "headers": {"Content-Type": "text/plain"}}, 415),
        (
            {
                "data": b'{"prompt": "' + b"x" * (1024 * 1024 + 1) + b'"}',
                "headers": {"Content-Type": "application/json"},
            },
            413,
        ),
    ],
)
def test_client_errors(served: tuple[str, Server], send: dict, status: int) -> None:
    response = requests.post(served[1].url + "/api/optimize", timeout=10, **send)
    assert response.status_code == status
    assert response.json()["requestId"] == response.headers["X-Request-ID"]


def test_not_found_and_method(served: tuple[str, Server]) -> None:
    missing = requests.get(served[1].url + "/api/missing", timeout=5)
    assert missing.status_code == 404 and missing.json()["path"] == "/api/missing"
    assert requests.put(served[1].url + "/api/optimize", timeout=5).status_code == 405


@pytest.mark.parametrize(("variable", "value"), [("LLM_PROVIDER", "gemini"), ("PORT", "abc"), ("APP_ENV", "staging")])
def test_bad_configuration_stops_start_up_with_one_line(variable: str, value: str) -> None:
    env = service_env({variable: value}, port=1, workers=1)
    result = subprocess.run(
        [str(BIN / "gunicorn"), "-c", "config/gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]


@pytest.mark.parametrize("app", ["loadtest.bare_wsgi:app", "loadtest.floor_wsgi:app"])
def test_the_server_configuration_serves_an_app_that_is_not_the_service(app: str) -> None:
    """`make bench` serves its baselines with the service's gunicorn configuration: its worker
    hooks (jobs, span export) leave an app without the service's parts alone, from boot to exit."""
    import signal

    from loadtest._procs import gunicorn, stop

    # The floor app reads its model's address at start; it is never called here.
    with gunicorn({"ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}, workers=1, app=app) as (url, proc, log):
        if app.startswith("loadtest.bare"):
            assert requests.post(url + "/api/optimize", json={"prompt": "p"}, timeout=10).status_code == 200
        else:  # the floor app calls a model for its one route: its worker answers anything else itself
            assert requests.get(url + "/missing", timeout=10).status_code == 404
        stop(proc, signal.SIGTERM)
        assert proc.returncode == 0, log.read_text(errors="replace")[-2000:]
        assert "Traceback" not in log.read_text(errors="replace")
