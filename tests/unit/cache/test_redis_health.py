"""After a Redis failure the worker leaves Redis alone for a pause, then tries again by itself."""

from __future__ import annotations

import time

import redis

from app.cache import CachedValue, RedisCache, RedisHealth
from loadtest._procs import free_port


def test_a_failure_pauses_redis_calls_then_they_resume() -> None:
    # As the service connects (from_url: no redis-py retries); nothing listens on the port.
    client = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2, socket_connect_timeout=0.2)
    health = RedisHealth(pause=0.3)
    cache = RedisCache(client, "t:", 0, health)
    assert cache.get("k") is None and health.failures == 1  # refused: counted, and the pause begins
    value = CachedValue(b"x", time.time(), time.time() + 60)
    assert cache.get("k") is None and not cache.set("k", value)
    assert health.failures == 1 and not health.available()  # skipped: no call was made
    time.sleep(0.35)
    assert health.available()
    assert cache.get("k") is None and health.failures == 2  # tried again after the pause
    client.close()
