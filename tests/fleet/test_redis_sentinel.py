"""REDIS_URL=redis+sentinel://host:port/service: the service finds its primary through a real
Sentinel (started here, watching a private Redis) for the shared cache and the rate limit."""

from __future__ import annotations

import pytest
import requests

from loadtest._procs import redis_sentinel
from tests.support import FakeUpstreamProcess, need_binary, provider_env, start_server

pytestmark = pytest.mark.integration


def test_cache_and_limits_through_sentinel(fake_upstream: FakeUpstreamProcess) -> None:
    with redis_sentinel(need_binary("redis-server")) as url:
        env = {**provider_env("anthropic", fake_upstream), "REDIS_URL": url, "RATE_LIMIT": "4/minute"}
        with start_server(env, workers=2) as server:
            body = {"prompt": "found through sentinel", "mode": "code"}
            answers = [requests.post(server.url + "/api/optimize", json=body, timeout=30) for _ in range(5)]
            ready = requests.get(server.url + "/health/ready", timeout=10).json()
    statuses = [a.status_code for a in answers]
    assert statuses == [200, 200, 200, 200, 429]  # one count for both workers, kept by the primary
    assert [a.headers["X-Cache"] for a in answers[:4]] == ["MISS", "HIT", "HIT", "HIT"]  # L1 or shared L2
    assert fake_upstream.calls() == 1
    assert ready["checks"]["redis"]["status"] == "ok"
