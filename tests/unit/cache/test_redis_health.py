"""After a Redis failure the worker leaves Redis alone for a pause, then tries again by itself."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
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


def test_slow_replies_pause_redis_only_once_it_has_answered_nothing_for_a_while() -> None:
    """What pauses Redis is Redis's own behaviour: a refused connection at once; timeouts while
    Redis still answers other calls never (a busy machine's Redis stalls now and then, and every
    call in flight times out together); timeouts with no answer for STALL_TO_PAUSE, yes."""
    from app.cache import health as module

    health = RedisHealth.for_timeout(0.25)
    health.guard(lambda: "answer")  # Redis answered just now
    for _ in range(10):  # a burst of timeouts, all within the stall window
        health.failed("cache get", redis.TimeoutError("slow"))
    assert health.available() and health.failures == 10
    health._answered -= module.STALL_TO_PAUSE * 0.25  # as if nothing had answered for the whole window
    health.failed("cache get", redis.TimeoutError("slow"))
    assert not health.available()  # Redis silent that long: left alone

    refused = RedisHealth.for_timeout(0.25)
    refused.guard(lambda: "answer")
    refused.failed("cache get", redis.ConnectionError("refused"))
    assert not refused.available()  # gone: left alone at once


def test_a_timeout_while_this_worker_was_late_is_not_redis_s_failure() -> None:
    import gevent

    health = RedisHealth.for_timeout(0.2)
    health.lag.start()
    gevent.sleep(0.06)  # the watcher ticks once
    time.sleep(0.3)  # this worker's loop blocked (CPU-bound work): the watcher wakes late
    gevent.sleep(0.06)
    assert health.lag.worst() >= 0.1 and health.starved(redis.TimeoutError("late"))
    health.failed("cache get", redis.TimeoutError("late"))
    assert health.late == 1 and health.failures == 0 and health.available()
    assert not health.starved(redis.ConnectionError("refused"))  # a refusal is never lateness


CALLS = {
    "command": lambda c: c.get("t:k"),
    "script": lambda c: c.register_script("return redis.call('get', KEYS[1])")(["t:k"]),
    "pipeline": lambda c: c.pipeline(transaction=False).get("t:k").incr("t:n").execute(),
    "transaction": lambda c: c.pipeline(transaction=True).get("t:k").incr("t:n").execute(),
    "lock": lambda c: c.lock("t:lock", timeout=5).acquire(blocking=False),
}


class _Counting(RedisHealth):
    """A RedisHealth that counts the calls made through its guard."""

    guarded = 0

    def guard(self, call: Any, *args: Any, even_paused: bool = False, **kwargs: Any) -> Any:
        self.guarded += 1
        return super().guard(call, *args, even_paused=even_paused, **kwargs)


@pytest.mark.parametrize("call", list(CALLS))
def test_every_kind_of_call_goes_through_the_guard(call: str) -> None:
    """Commands, scripts, pipelines and locks of the service's client: each goes through the
    guard (its time bound: test_a_whole_call_is_bounded_by_the_call_timeout); none is made while
    Redis is paused, and its `plain` twin makes them all the same, through the guard too."""
    from app.cache import PausingRedis, RedisPaused
    from tests.support import redis_server

    make = CALLS[call]
    with redis_server() as url:
        health = _Counting()
        health.call_timeout = 5.0
        client = PausingRedis.connect(url, health, socket_timeout=5, socket_connect_timeout=5)
        make(client)
        assert health.guarded >= 1
        health.failed("test", redis.ConnectionError("as if Redis had failed"))
        with pytest.raises(RedisPaused):
            make(client)
        before = health.guarded
        make(client.plain)
        assert health.guarded > before and not health.available()
        client.close()
