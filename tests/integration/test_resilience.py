"""Circuit breaker, retries inside the deadline, stale-if-error and key rejection, end to end."""

from __future__ import annotations

import statistics
import time

import pytest
import requests

from tests.integration.test_metrics import scrape, total
from tests.support import FakeUpstreamProcess, start_server, wait_until

pytestmark = pytest.mark.integration


def _env(upstream: FakeUpstreamProcess, **extra: str) -> dict[str, str]:
    return {"ANTHROPIC_API_KEY": "sk-ant-secret-value", "ANTHROPIC_BASE_URL": upstream.url, **extra}


def _optimize(url: str, prompt: str, **kwargs: object) -> requests.Response:
    return requests.post(url + "/api/optimize", json={"prompt": prompt, "mode": "code"}, timeout=15, **kwargs)


def test_breaker_opens_answers_fast_probes_and_closes(fake_upstream: FakeUpstreamProcess) -> None:
    reset = 2.0  # BREAKER_RESET_TIMEOUT
    env = _env(fake_upstream, BREAKER_FAIL_MAX="3", BREAKER_RESET_TIMEOUT=str(reset), UPSTREAM_MAX_RETRIES="0")
    # Failures take 1 s at the upstream: an answer from an open breaker is faster than any
    # upstream round trip by construction, whatever the machine's speed.
    fake_upstream.control(sticky={"status": 500, "action": "delay", "seconds": 1.0})
    with start_server(env) as server, requests.Session() as session:
        assert [_optimize(server.url, f"fail {i}").status_code for i in range(3)] == [502, 502, 502]
        opened = time.monotonic()
        assert fake_upstream.calls() == 3
        latencies = []
        for i in range(50):
            started = time.perf_counter()
            response = session.post(server.url + "/api/optimize", json={"prompt": f"open {i}", "mode": "code"})
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 503
            assert 1 <= int(response.headers["Retry-After"]) <= reset
            assert "circuit" in response.json()["error"]
            assert response.json()["details"] == "recent upstream calls failed; calls resume after Retry-After seconds"
        # A stream is refused the same way, before any event: 503 JSON with Retry-After.
        streamed = session.post(server.url + "/api/optimize-stream", json={"prompt": "open", "mode": "code"})
        assert streamed.status_code == 503 and streamed.headers["Content-Type"] == "application/json"
        assert 1 <= int(streamed.headers["Retry-After"]) <= reset and "circuit" in streamed.json()["error"]
        assert fake_upstream.calls() == 3  # nothing reached the upstream while open
        p50, worst = statistics.median(latencies) * 1000, max(latencies) * 1000
        print(f"\nopen breaker: 50 answers, p50 {p50:.2f} ms, max {worst:.2f} ms (client-measured, keep-alive)")
        assert worst < 1000  # never waited on the (1 s) upstream
        metrics = scrape(server)
        assert total(metrics, "circuit_breaker_state", circuit="anthropic") == 1

        _sleep_until(opened + reset)  # the reset timeout has passed: one probe, failing, re-opens
        assert _optimize(server.url, "probe fails").status_code == 502
        reopened = time.monotonic()
        assert fake_upstream.calls() == 4
        assert _optimize(server.url, "still open").status_code == 503
        assert time.monotonic() - reopened < reset, "too slow to see the re-opened state; raise `reset`"

        fake_upstream.control(sticky=None)
        _sleep_until(reopened + reset)
        assert _optimize(server.url, "probe succeeds").status_code == 200
        assert fake_upstream.calls() == 5
        assert _optimize(server.url, "closed again").status_code == 200
        stats = requests.get(server.url + "/stats", timeout=5).json()
        assert stats["circuitBreaker"]["state"] == "closed"
        assert total(scrape(server), "circuit_breaker_state", circuit="anthropic") == 0


def _sleep_until(moment: float) -> None:
    """Wait for a timer in the server to run out (a clock, not a guess about speed)."""
    time.sleep(max(0.0, moment - time.monotonic()) + 0.05)


def test_callers_own_errors_do_not_trip_the_breaker(fake_upstream: FakeUpstreamProcess) -> None:
    env = _env(fake_upstream, BREAKER_FAIL_MAX="2", UPSTREAM_MAX_RETRIES="0")
    with start_server(env) as server:
        fake_upstream.control(sticky={"status": 400})
        assert {_optimize(server.url, f"bad {i}").status_code for i in range(5)} == {502}
        assert fake_upstream.calls() == 5
        fake_upstream.control(sticky=None)
        assert _optimize(server.url, "fine").status_code == 200


def test_retry_after_beyond_the_deadline_is_not_waited_for(fake_upstream: FakeUpstreamProcess) -> None:
    with start_server(_env(fake_upstream, UPSTREAM_TIMEOUT="20")) as server:
        fake_upstream.control(faults=[{"status": 429, "headers": {"retry-after": "60"}}])
        started = time.monotonic()
        response = _optimize(server.url, "rate limited upstream")
        # Waiting would take the whole 20 s deadline; giving up at once takes one round trip.
        assert time.monotonic() - started < 10
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "60"
        assert fake_upstream.calls() == 1


def test_retries_never_outlive_the_deadline(fake_upstream: FakeUpstreamProcess) -> None:
    deadline, attempt = 3.0, 1.2
    with start_server(_env(fake_upstream, UPSTREAM_TIMEOUT=str(deadline), UPSTREAM_MAX_RETRIES="5")) as server:
        fake_upstream.control(sticky={"action": "delay", "seconds": attempt, "status": 503})
        started = time.monotonic()
        response = _optimize(server.url, "slow and failing every time")
        elapsed = time.monotonic() - started
        assert response.status_code in (502, 504)  # last attempt failed, or ran into the deadline
        # Attempt 2 starts before 1.7 s + overhead; an attempt 3 let run to its end would finish
        # after 3.6 s. The deadline cuts it at 3 s; 0.5 s is left for a slow machine to answer.
        assert elapsed < deadline + 0.5, elapsed
        assert 2 <= fake_upstream.calls() <= 3


def test_stale_answer_when_the_upstream_fails(fake_upstream: FakeUpstreamProcess) -> None:
    with start_server(_env(fake_upstream, CACHE_DEFAULT_TTL="1", UPSTREAM_MAX_RETRIES="0")) as server:
        fresh = _optimize(server.url, "keep me around")
        assert fresh.headers["X-Cache"] == "MISS"
        time.sleep(1.2)  # CACHE_DEFAULT_TTL=1: waiting out the clock, the answer is now expired
        fake_upstream.control(sticky={"status": 503})
        stale = _optimize(server.url, "keep me around")
        assert stale.status_code == 200
        assert stale.headers["X-Cache"] == "STALE"
        assert int(stale.headers["Age"]) >= 1
        assert stale.json()["optimizedPrompt"] == fresh.json()["optimizedPrompt"]
        assert total(scrape(server), "stale_responses_total") == 1
        assert _optimize(server.url, "never cached").status_code == 502


def test_rejected_key_is_a_502_logged_loudly_and_never_echoed(fake_upstream: FakeUpstreamProcess) -> None:
    with start_server(_env(fake_upstream)) as server:
        fake_upstream.control(faults=[{"status": 401}])
        response = _optimize(server.url, "who am i")
        assert response.status_code == 502
        assert response.json()["error"] == "Upstream authentication failed"
        wait_until(lambda: "rejected our API key" in server.output(), what="the log line")
        output = server.output()
        assert "sk-ant-secret-value" not in output + response.text
