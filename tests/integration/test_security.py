"""Rate limits (in memory and shared through Redis), proxy trust, API keys, headers, CORS and
graceful shutdown, against real gunicorn servers."""

from __future__ import annotations

import signal
import socket
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.integration.test_metrics import scrape, total
from tests.support import FakeUpstreamProcess, redis_env, redis_server, start_server, wait_until
from tests.unit.api.test_validation import VALID

pytestmark = pytest.mark.integration


def _post(url: str, headers: dict[str, str] | None = None, prompt: str = "limit me") -> requests.Response:
    return requests.post(
        url + "/api/optimize",
        json={"prompt": prompt, "mode": "code"},
        headers={"Connection": "close", **(headers or {})},
        timeout=60,
    )


def _refuses_connections(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return True
    return False


def test_rate_limit_in_memory_is_exact() -> None:
    limit, extra = 5, 3
    with start_server({"RATE_LIMIT": f"{limit}/minute"}, workers=1) as server:
        responses = [_post(server.url) for _ in range(limit + extra)]
        assert [r.status_code for r in responses].count(429) == extra
        refused = responses[-1]
        assert refused.status_code == 429
        body = refused.json()
        assert body["error"] == "Too many requests" and body["requestId"] == refused.headers["X-Request-ID"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 61  # the window's end, rounded up
        assert refused.headers["RateLimit-Limit"] == str(limit)
        assert refused.headers["RateLimit-Remaining"] == "0"
        assert refused.headers["RateLimit-Policy"] == f'{limit};w=60;comment="counted per worker, 1 worker(s)"'
        assert responses[0].headers["RateLimit-Remaining"] == str(limit - 1)
        assert "Retry-After" not in responses[0].headers
        assert {requests.get(server.url + "/health", timeout=5).status_code for _ in range(20)} == {200}
        metrics = scrape(server)
        assert total(metrics, "rate_limited_requests_total") == extra
        assert total(metrics, "http_requests_total", status="429") == extra


def test_rate_limit_shared_through_redis_across_workers() -> None:
    limit, extra = 10, 5
    with (
        redis_server() as redis_url,
        start_server({"RATE_LIMIT": f"{limit}/minute", **redis_env(redis_url)}, workers=2) as server,
    ):
        with ThreadPoolExecutor(5) as pool:
            statuses = Counter(pool.map(lambda _: _post(server.url).status_code, range(limit + extra)))
        assert statuses == {200: limit, 429: extra}
        assert total(scrape(server), "rate_limited_requests_total") == extra
        assert _post(server.url).headers["RateLimit-Policy"] == f'{limit};w=60;comment="shared by all workers"'
        assert "counted per worker" not in server.output()


def test_per_worker_limits_are_announced_once() -> None:
    with start_server({"RATE_LIMIT": "10/minute"}, workers=2) as server:
        policy = _post(server.url).headers["RateLimit-Policy"]
        assert policy == '10;w=60;comment="counted per worker, 2 worker(s)"'
        warnings = [line for line in server.output().splitlines() if "is counted per worker" in line]
        assert warnings == [
            "warning: RATE_LIMIT=10/minute is counted per worker without REDIS_URL; "
            "with 2 workers a client may get up to 2x that"
        ]


def test_empty_rate_limit_turns_limiting_off_in_production() -> None:
    with start_server({"APP_ENV": "production", "RATE_LIMIT": "", "LOG_LEVEL": "WARNING"}) as server:
        responses = [_post(server.url) for _ in range(70)]  # over the 60/minute default
        assert {r.status_code for r in responses} == {200}
        assert "RateLimit-Limit" not in responses[-1].headers


def test_limits_count_per_api_key() -> None:
    env = {"RATE_LIMIT": "2/minute", "API_KEYS": "key-one,key-two"}
    with start_server(env) as server:
        one = [_post(server.url, {"X-API-Key": "key-one"}).status_code for _ in range(3)]
        two = [_post(server.url, {"Authorization": "Bearer key-two"}).status_code for _ in range(3)]
        assert one == two == [200, 200, 429]


@pytest.mark.parametrize(("hops", "separate"), [(0, False), (1, True)])
def test_forwarded_for_is_believed_only_from_trusted_proxies(hops: int, separate: bool) -> None:
    with start_server({"RATE_LIMIT": "1/minute", "TRUSTED_PROXIES": str(hops)}) as server:
        first = _post(server.url, {"X-Forwarded-For": "203.0.113.1"})
        second = _post(server.url, {"X-Forwarded-For": "203.0.113.2"})
        assert first.status_code == 200
        assert second.status_code == (200 if separate else 429)


@pytest.fixture(scope="module")
def locked(_fake_upstream_process: FakeUpstreamProcess) -> Iterator[str]:
    env = {"API_KEYS": "alpha-key,beta-key", "METRICS_TOKEN": "scrape-token", "CORS_ORIGINS": "https://ui.example"}
    with start_server(env) as server:
        yield server.url


@pytest.mark.parametrize(("path", "body"), list(VALID.items()))
def test_every_api_route_needs_a_valid_key(locked: str, path: str, body: dict) -> None:
    missing = requests.post(locked + path, json=body, timeout=10)
    wrong = requests.post(locked + path, json=body, headers={"X-API-Key": "alpha-kez"}, timeout=10)
    wrong_bearer = requests.post(locked + path, json=body, headers={"Authorization": "Bearer nope"}, timeout=10)
    right = requests.post(locked + path, json=body, headers={"Authorization": "Bearer beta-key"}, timeout=10)
    assert (missing.status_code, wrong.status_code, wrong_bearer.status_code, right.status_code) == (401, 403, 403, 200)
    assert missing.json()["requestId"] and wrong.json()["error"] == "API key not valid"
    assert right.headers["Cache-Control"] == "no-store"
    assert "alpha-kez" not in wrong.text


@pytest.mark.parametrize("path", ["/metrics", "/stats"])
def test_operator_routes_need_the_metrics_token(locked: str, path: str) -> None:
    assert requests.get(locked + path, timeout=5).status_code == 401
    assert requests.get(locked + path, headers={"X-API-Key": "alpha-key"}, timeout=5).status_code == 403
    assert requests.get(locked + path, headers={"Authorization": "Bearer scrape-token"}, timeout=5).status_code == 200


@pytest.mark.parametrize("path", ["/health", "/health/live", "/health/ready", "/openapi.json"])
def test_probes_and_the_spec_stay_open(locked: str, path: str) -> None:
    assert requests.get(locked + path, timeout=5).status_code == 200


def test_security_headers_on_every_response(locked: str) -> None:
    for response in (
        requests.get(locked + "/health", timeout=5),
        requests.get(locked + "/nope", timeout=5),
        requests.post(locked + "/api/optimize", json={}, timeout=5),
    ):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "no-referrer"


def test_cors(locked: str) -> None:
    preflight = requests.options(
        locked + "/api/optimize",
        timeout=5,
        headers={
            "Origin": "https://ui.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-api-key",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://ui.example"
    assert "X-API-Key" in preflight.headers["Access-Control-Allow-Headers"]
    allowed = requests.post(
        locked + "/api/optimize",
        json={"prompt": "x", "mode": "code"},
        timeout=5,
        headers={"Origin": "https://ui.example", "X-API-Key": "alpha-key"},
    )
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://ui.example"
    assert "X-Request-ID" in allowed.headers["Access-Control-Expose-Headers"]
    other = requests.get(locked + "/health", headers={"Origin": "https://evil.example"}, timeout=5)
    assert "Access-Control-Allow-Origin" not in other.headers


def test_sigterm_lets_accepted_requests_finish(fake_upstream: FakeUpstreamProcess) -> None:
    env = {"ANTHROPIC_API_KEY": "sk-ant-test", "ANTHROPIC_BASE_URL": fake_upstream.url}
    # The gate is opened before the pool waits for its threads, also when an assertion fails.
    with start_server(env, workers=2) as server, ThreadPoolExecutor(40) as pool, fake_upstream.hold():
        futures = [pool.submit(_post, server.url, None, f"in flight {i}") for i in range(40)]
        # Every request accepted and parked at the upstream, by construction, before the signal.
        wait_until(lambda: fake_upstream.held() == 40, what="40 requests parked at the upstream")
        server.proc.send_signal(signal.SIGTERM)
        # Release only once the server has stopped accepting: the answers then come from draining.
        wait_until(lambda: _refuses_connections(server.url), what="the server to stop accepting")
        fake_upstream.release()
        statuses = Counter(f.result().status_code for f in futures)
        assert statuses == {200: 40}
        assert server.proc.wait(timeout=60) == 0, server.output()[-3000:]
        print(f"\nSIGTERM with 40 requests in flight: {dict(statuses)}; server exited cleanly")
