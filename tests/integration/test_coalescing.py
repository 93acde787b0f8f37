"""N identical concurrent requests against real gunicorn workers cost one upstream call per
worker without Redis, and exactly one with Redis (across workers and across instances).

Concurrency is made true by construction: the fake upstream holds its answer until every request
of the burst is either parked at the upstream or counted by the service as waiting on an
identical call (`held_burst`), so no assertion depends on how fast the machine is."""

from __future__ import annotations

from collections import Counter

import pytest
import requests

from tests.support import FakeUpstreamProcess, free_port, held_burst, redis_env, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 50  # as many as proves it: the burst is concurrent by construction, whatever its size
WORKERS = 2


def _env(upstream: FakeUpstreamProcess, **extra: str) -> dict[str, str]:
    return {
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "ANTHROPIC_BASE_URL": upstream.url,
        "UPSTREAM_MAX_RETRIES": "0",
        "BREAKER_FAIL_MAX": "1000",
        **extra,
    }


def _burst(upstream: FakeUpstreamProcess, urls: list[str], body: dict) -> tuple[list[requests.Response], int]:
    def one(i: int) -> requests.Response:
        headers = {"Connection": "close"}  # N independent clients, one connection each
        return requests.post(urls[i % len(urls)] + "/api/optimize", json=body, headers=headers, timeout=120)

    return held_burst(upstream, urls, one, N)


def _report(label: str, responses: list[requests.Response], calls: int) -> Counter[str]:
    caches = Counter(r.headers.get("X-Cache", str(r.status_code)) for r in responses)
    print(
        f"\n{label}: {len(responses)} identical concurrent requests -> {calls} upstream call(s); X-Cache {dict(caches)}"
    )
    return caches


def test_without_redis_at_most_one_call_per_worker(fake_upstream: FakeUpstreamProcess) -> None:
    body = {"prompt": "coalesce me, no redis", "mode": "reasoning"}
    with start_server(_env(fake_upstream), workers=WORKERS) as server:
        responses, parked = _burst(fake_upstream, [server.url], body)
        calls = fake_upstream.calls()
        caches = _report(f"{WORKERS} workers, no Redis", responses, calls)
        assert {r.status_code for r in responses} == {200}
        assert len({r.json()["optimizedPrompt"] for r in responses}) == 1
        assert 1 <= calls == parked <= WORKERS  # one leader per worker that received the burst
        assert caches == {"MISS": calls, "COALESCED": N - calls}
        if calls == WORKERS:  # every worker led a call, so every worker holds the answer now
            again = requests.post(server.url + "/api/optimize", json=body, timeout=10)
            assert again.headers["X-Cache"] == "HIT"
        assert fake_upstream.calls() == calls


def test_with_redis_exactly_one_call(fake_upstream: FakeUpstreamProcess, redis_url: str) -> None:
    body = {"prompt": "coalesce me through redis", "mode": "reasoning"}
    with start_server(_env(fake_upstream, **redis_env(redis_url)), workers=WORKERS) as server:
        responses, _ = _burst(fake_upstream, [server.url], body)
        caches = _report(f"{WORKERS} workers, Redis", responses, fake_upstream.calls())
        assert {r.status_code for r in responses} == {200}
        assert len({r.json()["optimizedPrompt"] for r in responses}) == 1
        assert fake_upstream.calls() == 1
        assert caches["MISS"] == 1
        for _ in range(4):  # whichever worker answers: L1 or the shared L2
            again = requests.post(server.url + "/api/optimize", json=body, timeout=10)
            assert again.headers["X-Cache"] == "HIT"
            assert again.json() == responses[0].json()
        assert fake_upstream.calls() == 1


def test_two_instances_sharing_redis_make_one_call(fake_upstream: FakeUpstreamProcess, redis_url: str) -> None:
    body = {"prompt": "coalesce me across instances", "mode": "research"}
    env = _env(fake_upstream, **redis_env(redis_url))
    with start_server(env, workers=1) as a, start_server(env, workers=1) as b:
        responses, _ = _burst(fake_upstream, [a.url, b.url], body)
        caches = _report("2 instances, Redis", responses, fake_upstream.calls())
        assert {r.status_code for r in responses} == {200}
        assert fake_upstream.calls() == 1
        assert caches == {"MISS": 1, "COALESCED": N - 1}


@pytest.mark.parametrize("with_redis", [False, True])
def test_failing_upstream_gives_every_follower_the_same_error(
    fake_upstream: FakeUpstreamProcess, redis_url: str, with_redis: bool
) -> None:
    fake_upstream.control(sticky={"status": 500})
    body = {"prompt": f"fail together {with_redis}", "mode": "code"}
    env = _env(fake_upstream, **(redis_env(redis_url) if with_redis else {}))
    with start_server(env, workers=WORKERS) as server:
        responses, parked = _burst(fake_upstream, [server.url], body)
        _report(f"failing upstream, redis={with_redis}", responses, fake_upstream.calls())
        assert {r.status_code for r in responses} == {502}
        assert len({r.json()["error"] for r in responses}) == 1
        assert len({r.json()["requestId"] for r in responses}) == N  # each caller its own id
        assert fake_upstream.calls() == parked
        assert 1 <= parked <= (1 if with_redis else WORKERS)


def test_redis_down_still_serves(fake_upstream: FakeUpstreamProcess) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with start_server(_env(fake_upstream, REDIS_URL=dead), workers=1) as server:
        body = {"prompt": "redis is down", "mode": "code"}
        first = requests.post(server.url + "/api/optimize", json=body, timeout=10)
        second = requests.post(server.url + "/api/optimize", json=body, timeout=10)
        assert (first.status_code, second.status_code) == (200, 200)
        assert second.headers["X-Cache"] == "HIT"  # L1 still works
        ready = requests.get(server.url + "/health/ready", timeout=5).json()
        assert ready["status"] == "degraded" and ready["checks"]["redis"]["status"] == "warn"
        assert "redis unavailable" in server.output()
