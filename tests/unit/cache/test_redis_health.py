"""After a Redis failure the worker leaves Redis alone for a pause, then tries again by itself."""

from __future__ import annotations

import contextlib
import time

import redis

from app.cache import CachedValue, PausingRedis, RedisCache, RedisHealth
from loadtest._procs import free_port


def test_a_failure_pauses_redis_calls_then_they_resume() -> None:
    # As the service connects (from_url: no redis-py retries); nothing listens on the port.
    health = RedisHealth(pause=0.3)
    client = PausingRedis.connect(
        f"redis://127.0.0.1:{free_port()}/0", health, socket_timeout=0.2, socket_connect_timeout=0.2
    )
    cache = RedisCache(client, "t:", 0, health)
    assert cache.get("k") is None and health.failures == 1  # refused: counted, and the pause begins
    value = CachedValue(b"x", time.time(), time.time() + 60)
    assert cache.get("k") is None and not cache.set("k", value)
    assert health.failures == 1 and not health.available()  # skipped: no call was made
    time.sleep(0.35)
    assert health.available()
    assert cache.get("k") is None and health.failures == 2  # tried again after the pause
    client.close()


def test_the_service_client_skips_calls_while_paused_but_locks_and_readiness_still_ask() -> None:
    from app.cache import PausingRedis, RedisPaused
    from tests.support import redis_server

    with redis_server() as url:
        health = RedisHealth.for_timeout(0.5)
        client = PausingRedis.connect(url, health, socket_timeout=0.5)
        cache = RedisCache(client, "t:", 0, health)
        value = CachedValue(b"x", time.time(), time.time() + 60)
        assert cache.set("k", value) and cache.get("k") == value
        health.failed("test", redis.ConnectionError("as if Redis had failed"))
        try:
            client.get("t:cache:k")
        except RedisPaused:
            pass
        else:
            raise AssertionError("a paused client must not call Redis")
        assert cache.get("k") is None and health.failures == 1  # skipped, not counted again
        assert cache.ping()  # readiness asks Redis itself
        lock = client.plain.lock("t:lock", timeout=5)
        assert lock.acquire(blocking=False) and lock.release() is None  # locks are not paused
        client.close()


def test_a_whole_call_is_bounded_by_the_call_timeout() -> None:
    import gevent

    health = RedisHealth.for_timeout(0.2)
    started = time.monotonic()
    with contextlib.suppress(redis.TimeoutError):
        health.guard(gevent.sleep, 5)
    assert time.monotonic() - started < 2  # the 5 s call was cut at 0.2 s
