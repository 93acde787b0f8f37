"""One contract, every cache: MemoryCache (L1), RedisCache (L2, a private redis-server) and
DiskCache (L2 on this machine) agree on get/set, return types, freshness, the stale window and
expiry."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.cache import CachedValue, DiskCache, MemoryCache, RedisCache, RedisHealth

STALE_SECONDS = 60


@pytest.fixture(params=["memory", "redis", "disk"])
def cache(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoryCache | RedisCache | DiskCache]:
    if request.param == "memory":
        yield MemoryCache(max_bytes=10**6, max_entries=100, stale_seconds=STALE_SECONDS)
        return
    if request.param == "disk":
        disk = DiskCache(str(tmp_path / "cache"), 10**7, STALE_SECONDS)
        yield disk
        disk.close()
        return
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    client.flushdb()
    yield RedisCache(client, "test:", STALE_SECONDS, RedisHealth())
    client.close()


def _value(fresh_for: float, data: bytes = b'{"p":"answer"}', age: float = 0.0) -> CachedValue:
    now = time.time()
    return CachedValue(data, stored_at=now - age, fresh_until=now + fresh_for)


def test_absent_is_none(cache: MemoryCache | RedisCache | DiskCache) -> None:
    assert cache.get("nothing here") is None


def test_set_returns_true_and_get_returns_the_same_value(cache: MemoryCache | RedisCache | DiskCache) -> None:
    value = _value(3600, data=bytes(range(256)) * 4)  # any bytes, not only text
    assert cache.set("k", value) is True
    got = cache.get("k")
    assert got == value
    assert type(got.data) is bytes and type(got.stored_at) is float  # type: ignore[union-attr]
    assert got.is_fresh(time.time())  # type: ignore[union-attr]


def test_a_later_set_replaces(cache: MemoryCache | RedisCache | DiskCache) -> None:
    cache.set("k", _value(3600, b"first"))
    cache.set("k", _value(3600, b"second"))
    assert cache.get("k").data == b"second"  # type: ignore[union-attr]


def test_expired_within_the_stale_window_is_returned_as_stale(cache: MemoryCache | RedisCache | DiskCache) -> None:
    assert cache.set("k", _value(-10, age=100)) is True  # expired 10 s ago, window 60 s
    got = cache.get("k")
    assert got is not None and not got.is_fresh(time.time())


def test_older_than_the_stale_window_is_gone(cache: MemoryCache | RedisCache | DiskCache) -> None:
    stored = cache.set("k", _value(-(STALE_SECONDS + 10), age=200))
    assert cache.get("k") is None
    assert stored is (isinstance(cache, MemoryCache))  # L2 refuses it at once; L1 drops it on read


def test_entries_expire_when_fresh_time_and_stale_window_are_over(cache: MemoryCache | RedisCache | DiskCache) -> None:
    # fresh for 0.2 s, and the stale window ends 0.3 s after that (value built to end at +0.5 s)
    value = _value(0.2 - STALE_SECONDS + 0.3)
    assert cache.set("k", value) is True
    assert cache.get("k") is not None
    time.sleep(max(0.0, value.fresh_until + STALE_SECONDS - time.time()) + 0.1)  # the clock, not a guess
    assert cache.get("k") is None


def test_keys_do_not_mix(cache: MemoryCache | RedisCache | DiskCache) -> None:
    cache.set("a", _value(3600, b"A"))
    cache.set("b", _value(3600, b"B"))
    assert (cache.get("a").data, cache.get("b").data) == (b"A", b"B")  # type: ignore[union-attr]


def test_encoding_round_trips_and_rejects_short_bytes() -> None:
    value = _value(5, b"\x00\xffdata")
    assert CachedValue.decode(value.encode()) == value
    assert CachedValue.decode(b"short") is None
