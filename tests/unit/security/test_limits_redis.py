"""Rate limits counted in a real (private) Redis, in one app: shared counts, and what happens
when Redis goes away — open (the default) or closed, as RATE_LIMIT_ON_REDIS_ERROR says."""

from __future__ import annotations

import contextlib

import redis

from tests.support import make_app, wait_until

BODY = {"prompt": "x", "mode": "code"}
# In one process without gevent's patching, nothing may block on a Redis read: no coalescing.
BASE = {"APP_ENV": "testing", "COALESCING_ENABLED": "false"}


def _stop(url: str) -> None:
    with redis.Redis.from_url(url) as client, contextlib.suppress(redis.ConnectionError):
        client.shutdown(nosave=True)


def test_two_apps_share_one_count(own_redis_url: str) -> None:
    settings = {**BASE, "RATE_LIMIT": "3/minute", "REDIS_URL": own_redis_url}
    one, two = make_app(settings).test_client(), make_app(settings).test_client()
    statuses = [c.post("/api/optimize", json=BODY).status_code for c in (one, two, one, two)]
    assert statuses == [200, 200, 200, 429]
    assert one.post("/api/optimize", json=BODY).headers["RateLimit-Policy"].endswith('"shared by all workers"')


def test_open_by_default_counts_in_memory_without_redis(own_redis_url: str) -> None:
    app = make_app({**BASE, "RATE_LIMIT": "2/minute", "REDIS_URL": own_redis_url})
    client = app.test_client()
    assert client.post("/api/optimize", json=BODY).status_code == 200
    _stop(own_redis_url)
    statuses = [client.post("/api/optimize", json=BODY).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]  # a fresh count in this worker's memory
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.get_json()["status"] == "degraded"


def test_closed_answers_503_while_redis_is_away(own_redis_url: str) -> None:
    settings = {**BASE, "RATE_LIMIT": "2/minute", "REDIS_URL": own_redis_url}
    client = make_app({**settings, "RATE_LIMIT_ON_REDIS_ERROR": "closed"}).test_client()
    assert client.post("/api/optimize", json=BODY).status_code == 200
    _stop(own_redis_url)
    refused = wait_until(
        lambda: (r := client.post("/api/optimize", json=BODY)).status_code == 503 and r, what="a closed refusal"
    )
    assert refused.headers["Retry-After"] == "5"
    assert refused.get_json()["error"] == "Rate limit unavailable" and refused.get_json()["requestId"]
    assert client.get("/health/live").status_code == 200  # only /api/* is limited
