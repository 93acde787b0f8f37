"""N identical concurrent requests against real gunicorn workers cost one upstream call per
worker without Redis, and exactly one with Redis (across workers and across instances)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support import FakeUpstreamProcess, free_port, redis_server, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 200
WORKERS = 2
LATENCY = 0.3


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


def _env(upstream: FakeUpstreamProcess, **extra: str) -> dict[str, str]:
    return {
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "ANTHROPIC_BASE_URL": upstream.url,
        "UPSTREAM_MAX_RETRIES": "0",
        "BREAKER_FAIL_MAX": "1000",
        **extra,
    }


def _burst(urls: list[str], body: dict, n: int = N) -> list[requests.Response]:
    def one(i: int) -> requests.Response:
        headers = {"Connection": "close"}  # N independent clients, one connection each
        return requests.post(urls[i % len(urls)] + "/api/optimize", json=body, headers=headers, timeout=30)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def _report(label: str, responses: list[requests.Response], calls: int) -> Counter[str]:
    caches = Counter(r.headers.get("X-Cache", str(r.status_code)) for r in responses)
    print(
        f"\n{label}: {len(responses)} identical concurrent requests -> {calls} upstream call(s); X-Cache {dict(caches)}"
    )
    return caches


def test_without_redis_at_most_one_call_per_worker(fake_upstream: FakeUpstreamProcess) -> None:
    fake_upstream.reset(latency=LATENCY)
    body = {"prompt": "coalesce me, no redis", "mode": "reasoning"}
    with start_server(_env(fake_upstream), workers=WORKERS) as server:
        responses = _burst([server.url], body)
        calls = fake_upstream.calls()
        _report(f"{WORKERS} workers, no Redis", responses, calls)
        assert {r.status_code for r in responses} == {200}
        assert len({r.json()["optimizedPrompt"] for r in responses}) == 1
        assert 1 <= calls <= WORKERS
        again = requests.post(server.url + "/api/optimize", json=body, timeout=10)
        assert again.headers["X-Cache"] in ("HIT", "MISS")  # MISS only if it reached the other worker
        assert fake_upstream.calls() <= WORKERS


def test_with_redis_exactly_one_call(fake_upstream: FakeUpstreamProcess, redis_url: str) -> None:
    fake_upstream.reset(latency=LATENCY)
    body = {"prompt": "coalesce me through redis", "mode": "reasoning"}
    with start_server(_env(fake_upstream, REDIS_URL=redis_url), workers=WORKERS) as server:
        responses = _burst([server.url], body)
        caches = _report(f"{WORKERS} workers, Redis", responses, fake_upstream.calls())
        assert {r.status_code for r in responses} == {200}
        assert len({r.json()["optimizedPrompt"] for r in responses}) == 1
        assert fake_upstream.calls() == 1
        assert caches["MISS"] == 1
        for _ in range(4):  # whichever worker answers: L1 or the shared L2
            again = requests.post(server.url + "/api/optimize", json=body, timeout=10)
            assert again.headers["X-Cache"] == "HIT"
            assert int(again.headers["Age"]) >= 0
        assert fake_upstream.calls() == 1


def test_two_instances_sharing_redis_make_one_call(fake_upstream: FakeUpstreamProcess, redis_url: str) -> None:
    fake_upstream.reset(latency=LATENCY)
    body = {"prompt": "coalesce me across instances", "mode": "research"}
    env = _env(fake_upstream, REDIS_URL=redis_url)
    with start_server(env, workers=1) as a, start_server(env, workers=1) as b:
        responses = _burst([a.url, b.url], body)
        _report("2 instances, Redis", responses, fake_upstream.calls())
        assert {r.status_code for r in responses} == {200}
        assert fake_upstream.calls() == 1


@pytest.mark.parametrize("with_redis", [False, True])
def test_failing_upstream_gives_every_follower_the_same_error(
    fake_upstream: FakeUpstreamProcess, redis_url: str, with_redis: bool
) -> None:
    fake_upstream.reset(latency=1.0)  # long enough for all N to be in flight before it fails
    fake_upstream.control(sticky={"status": 500})
    body = {"prompt": f"fail together {with_redis}", "mode": "code"}
    env = _env(fake_upstream, **({"REDIS_URL": redis_url} if with_redis else {}))
    with start_server(env, workers=WORKERS) as server:
        responses = _burst([server.url], body)
        _report(f"failing upstream, redis={with_redis}", responses, fake_upstream.calls())
        assert {r.status_code for r in responses} == {502}
        assert all(r.json()["requestId"] for r in responses)
        assert fake_upstream.calls() <= (1 if with_redis else WORKERS)


def test_redis_down_still_serves(fake_upstream: FakeUpstreamProcess) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with start_server(_env(fake_upstream, REDIS_URL=dead), workers=1) as server:
        body = {"prompt": "redis is down", "mode": "code"}
        first = requests.post(server.url + "/api/optimize", json=body, timeout=10)
        second = requests.post(server.url + "/api/optimize", json=body, timeout=10)
        assert (first.status_code, second.status_code) == (200, 200)
        assert second.headers["X-Cache"] == "HIT"  # L1 still works
        ready = requests.get(server.url + "/health/ready", timeout=5).json()
        assert ready["status"] == "ready" and ready["checks"]["redis"]["status"] == "warn"
        assert "redis unavailable" in server.output()
