"""Predictive warming: asks counted with forward decay in Redis (a private redis-server), and a
new worker's L1 warmed with the answers asked most lately rather than the most recently stored."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import gevent
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.cache import CachedValue, MemoryCache, RedisCache, RedisHealth
from app.cache.popularity import DAY, FLUSH_SECONDS, PENDING_MAX, TAU, Popularity
from app.gateway.core import Core


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


NOON = 20_000 * DAY + 12 * 3600.0


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


def test_later_asks_weigh_more_than_earlier_ones(client: redis.Redis) -> None:
    clock = _Clock(NOON - 3600)
    popularity = Popularity(client, "t:", RedisHealth(), cap=100, clock=clock)
    for _ in range(5):
        popularity.asked("asked-often-an-hour-ago")  # 5 x e^-2 = 0.68 of an ask now
    clock.now = NOON
    for _ in range(2):
        popularity.asked("asked-twice-now")
    popularity.asked("asked-once-now")
    popularity.flush()
    assert popularity.likely(10) == ["asked-twice-now", "asked-once-now", "asked-often-an-hour-ago"]
    assert popularity.likely(1) == ["asked-twice-now"]


def test_yesterday_fills_in_after_midnight(client: redis.Redis) -> None:
    clock = _Clock(NOON + 12 * 3600 - 60)  # a minute before midnight
    popularity = Popularity(client, "t:", RedisHealth(), cap=100, clock=clock)
    popularity.asked("late-yesterday")
    popularity.flush()
    clock.now += 120  # a minute after
    popularity.asked("just-now")
    popularity.flush()
    assert popularity.likely(10) == ["just-now", "late-yesterday"]
    scores = dict(client.zrange(f"t:warm:{int(clock.now // DAY)}", 0, -1, withscores=True))
    assert scores[b"just-now"] == pytest.approx(math.exp(60 / TAU))
    assert client.ttl(f"t:warm:{int(clock.now // DAY)}") > DAY


def test_the_set_is_trimmed_to_its_cap_keeping_the_most_asked(client: redis.Redis) -> None:
    popularity = Popularity(client, "t:", RedisHealth(), cap=3, clock=_Clock(NOON))
    for i in range(10):
        for _ in range(i + 1):
            popularity.asked(f"k{i}")
    popularity.flush()
    assert popularity.likely(10) == ["k9", "k8", "k7"]


def test_asks_are_sent_in_the_background_once_per_flush_interval(client: redis.Redis) -> None:
    clock = _Clock(NOON)
    popularity = Popularity(client, "t:", RedisHealth(), cap=100, clock=clock)
    popularity.asked("a")
    assert popularity.likely(10) == []  # counted, not sent yet
    clock.now += FLUSH_SECONDS
    popularity.asked("b")  # sends both, from a greenlet
    deadline = time.monotonic() + 10
    while popularity.likely(10) != ["b", "a"]:
        assert time.monotonic() < deadline, popularity.likely(10)
        gevent.sleep(0.01)  # the flush runs in a greenlet


def test_the_counts_kept_between_flushes_are_bounded() -> None:
    popularity = Popularity(None, "t:", RedisHealth(), cap=100, clock=_Clock(NOON))
    for i in range(PENDING_MAX + 500):
        popularity.asked(f"k{i}")
    assert len(popularity._pending) == PENDING_MAX


def test_redis_failing_costs_the_prediction_never_an_error() -> None:
    health = RedisHealth()
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    popularity = Popularity(dead, "t:", health, cap=100, clock=_Clock(NOON))
    popularity.asked("a")
    popularity.flush()
    assert popularity.likely(10) == []


def test_a_new_worker_warms_what_was_asked_most_lately_then_what_was_stored_last(client: redis.Redis) -> None:

    health = RedisHealth()
    l2 = RedisCache(client, "t:", 0, health)
    now = time.time()
    for i in range(6):  # hot-0 stored first, fresh-5 last
        l2.set(f"k{i}", CachedValue(f"answer {i}".encode(), now - 100 + i, now + 3600))
    clock = _Clock(now)
    popularity = Popularity(client, "t:", health, cap=100, clock=clock)
    for _ in range(3):
        popularity.asked("k0")
    popularity.asked("k1")
    popularity.asked("gone")  # asked, but no longer in L2: skipped
    popularity.flush()
    l1 = MemoryCache(10**6, 100)
    core = Core(None, l1=l1, l2=l2, popularity=popularity)  # type: ignore[arg-type]
    assert core.warm(3, 2.0) == 3
    assert {key for key in (f"k{i}" for i in range(6)) if l1.get(key) is not None} == {"k0", "k1", "k5"}
