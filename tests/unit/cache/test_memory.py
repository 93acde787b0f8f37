"""L1 cache: S3-FIFO eviction, TTL with a stale window, bounds in bytes and entries, measured memory."""

from __future__ import annotations

import gc
import os

import psutil
import pytest

from app.cache.memory import ENTRY_OVERHEAD, CachedValue, MemoryCache
from app.gateway.keys import request_key

NOW = 1_000_000.0


def _value(size: int, ttl: float = 3600, now: float = NOW, fill: bytes = b"x") -> CachedValue:
    return CachedValue(fill * size, stored_at=now, fresh_until=now + ttl)


def _fresh(ttl: float = 3600, size: int = 10) -> CachedValue:
    import time

    return _value(size, ttl, now=time.time())


def test_bytes_count_the_data_and_the_entry_overhead() -> None:
    cache = MemoryCache(max_bytes=10_000, max_entries=10)
    assert cache.set("a", _fresh())
    assert (len(cache), cache.bytes) == (1, 10 + ENTRY_OVERHEAD)


def test_an_entry_asked_again_outlives_one_asked_once() -> None:
    cache = MemoryCache(max_bytes=10**6, max_entries=3)
    for key in "abc":
        cache.set(key, _fresh())
    cache.get("a")  # a was asked again: promoted at the head; b, asked once, goes
    cache.set("d", _fresh())
    assert cache.get("b") is None
    assert all(cache.get(k) is not None for k in "acd")
    assert cache.evictions == 1


def test_byte_bound_evicts_and_counts() -> None:
    size = 1000
    cache = MemoryCache(max_bytes=3 * (size + ENTRY_OVERHEAD), max_entries=100)
    for key in "abc":
        cache.set(key, _fresh(size=size))
    cache.get("a")
    cache.set("d", _fresh(size=size))
    assert cache.get("b") is None and cache.get("a") is not None
    assert cache.bytes <= cache.max_bytes
    assert cache.evictions == 1


def test_value_larger_than_the_bound_is_not_cached() -> None:
    cache = MemoryCache(max_bytes=1000, max_entries=10)
    cache.set("small", _fresh(size=10))
    assert not cache.set("huge", _fresh(size=5000))
    assert cache.get("huge") is None
    assert cache.get("small") is not None  # nothing was evicted for it
    assert (len(cache), cache.evictions) == (1, 0)


def test_expired_entries_are_stale_then_gone() -> None:
    import time

    cache = MemoryCache(max_bytes=10**6, max_entries=10, stale_seconds=60)
    now = time.time()
    cache.set("old", CachedValue(b"v", stored_at=now - 100, fresh_until=now - 10))  # stale, inside window
    cache.set("gone", CachedValue(b"v", stored_at=now - 200, fresh_until=now - 100))  # beyond the window
    stale = cache.get("old")
    assert stale is not None and not stale.is_fresh(time.time())
    assert cache.get("gone") is None


def test_disabled_cache_stores_nothing() -> None:
    cache = MemoryCache(max_bytes=0, max_entries=0)
    assert not cache.set("a", _fresh())
    assert cache.get("a") is None


def test_ten_times_the_limit_stays_within_bytes_and_memory() -> None:
    limit = 32 * 1024 * 1024
    value_size = 64 * 1024
    cache = MemoryCache(max_bytes=limit, max_entries=1_000_000)
    process = psutil.Process(os.getpid())
    gc.collect()
    rss_before = process.memory_info().rss
    written = 0
    i = 0
    while written < 10 * limit:
        cache.set(request_key("optimize", {"prompt": i}), _fresh(size=value_size))  # real 73-character keys
        written += value_size
        i += 1
        assert cache.bytes <= limit
    gc.collect()
    growth = process.memory_info().rss - rss_before
    # The most recent entries survive, the oldest went first.
    assert cache.get(request_key("optimize", {"prompt": i - 1})) is not None
    assert cache.get(request_key("optimize", {"prompt": 0})) is None
    print(
        f"\nL1 fill: wrote {written / 2**20:.0f} MiB into a {limit / 2**20:.0f} MiB cache; "
        f"held {cache.bytes / 2**20:.1f} MiB in {len(cache)} entries, {cache.evictions} evictions; "
        f"RSS growth {growth / 2**20:.1f} MiB ({growth / limit:.2f}x the limit)"
    )
    assert growth <= 1.5 * limit


@pytest.mark.parametrize("entries", [1, 5])
def test_entry_bound(entries: int) -> None:
    cache = MemoryCache(max_bytes=10**6, max_entries=entries)
    for i in range(entries * 3):
        cache.set(str(i), _fresh())
    assert len(cache) == entries
    assert cache.evictions == entries * 2


def test_reserved_bytes_take_room_from_entries_until_released() -> None:
    size = 1000
    cache = MemoryCache(max_bytes=4 * (size + ENTRY_OVERHEAD), max_entries=100)
    for key in "abcd":
        cache.set(key, _fresh(size=size))
    cache.get("a")  # asked again: b goes first
    cache.reserve(size)  # an in-flight buffer: one entry must go, in eviction order
    assert cache.get("b") is None and len(cache) == 3 and cache.evictions == 1
    assert cache.bytes + cache.reserved <= cache.max_bytes
    cache.reserve(2 * (size + ENTRY_OVERHEAD))
    assert len(cache) == 1 and cache.bytes + cache.reserved <= cache.max_bytes
    assert not cache.set("e", _fresh(size=2 * size))  # does not fit beside the reservation
    cache.release(3 * size + 2 * ENTRY_OVERHEAD)
    assert cache.reserved == 0
    assert cache.set("e", _fresh(size=2 * size)) and cache.get("e") is not None


def test_an_entry_stored_beside_a_reservation_evicts_older_ones_not_itself() -> None:
    size = 1000
    cache = MemoryCache(max_bytes=3 * (size + ENTRY_OVERHEAD), max_entries=100)
    cache.set("old", _fresh(size=size))
    cache.set("older", _fresh(size=size))
    cache.reserve(size)
    assert cache.set("new", _fresh(size=size)) and cache.get("new") is not None
    assert cache.bytes + cache.reserved <= cache.max_bytes


class _Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def test_a_scan_of_one_offs_does_not_push_out_what_is_reused() -> None:
    """LRU lost a reused answer to every run of new ones longer than the cache; S3-FIFO's small
    queue takes the run, the reused answer sits in main."""
    cache = MemoryCache(max_bytes=10**7, max_entries=20)
    cache.set("hot", _fresh())
    for round_ in range(10):
        assert cache.get("hot") is not None, round_
        for i in range(50):
            cache.set(f"once-{round_}-{i}", _fresh())
    assert cache.get("hot") is not None
    assert len(cache) == 20


def test_a_key_that_left_probation_and_comes_back_goes_to_main() -> None:
    cache = MemoryCache(max_bytes=10**7, max_entries=10)
    for i in range(12):  # k0, k1 leave the small queue unasked: remembered as ghosts
        cache.set(f"k{i}", _fresh())
    assert cache.get("k0") is None
    cache.set("k0", _fresh())  # back: straight to main
    for i in range(12, 40):
        cache.set(f"k{i}", _fresh())  # a run of new keys churns the small queue only
    assert cache.get("k0") is not None


def test_a_hit_does_not_reorder_and_each_ask_is_one_more_round() -> None:
    cache = MemoryCache(max_bytes=10**7, max_entries=3)
    for key in "abc":
        cache.set(key, _fresh())
    for _ in range(5):
        cache.get("a")  # counted up to 3 rounds
    for i in range(4):
        cache.set(f"n{i}", _fresh())
    assert cache.get("a") is not None  # still there after 4 newer ones
    assert cache.evictions == 4


def test_entries_leave_at_their_own_time_and_their_bytes_with_them() -> None:
    clock = _Clock()
    cache = MemoryCache(max_bytes=10**7, max_entries=100, stale_seconds=60, clock=clock)
    cache.set("short", _value(10, ttl=100))
    cache.set("long", _value(10, ttl=1000))
    clock.now += 159
    assert cache.get("short") is not None  # stale, inside its window
    clock.now += 2
    cache.set("other", _value(10, ttl=1000, now=clock.now))  # a store sweeps what has expired
    assert cache.get("short") is None and len(cache) == 2
    assert cache.bytes == 2 * (10 + ENTRY_OVERHEAD)
    assert cache.evictions == 0  # an expiry is not an eviction


def test_replacing_one_key_again_and_again_keeps_its_bookkeeping_bounded() -> None:
    """A no-cache caller re-stores the same answer on every request: the expiry heap's leftovers
    are compacted, so memory does not grow with the requests."""
    clock = _Clock()
    cache = MemoryCache(max_bytes=10**7, max_entries=100, clock=clock)
    for _ in range(10_000):
        clock.now += 0.001
        cache.set("same", _value(10, now=clock.now))
    assert len(cache) == 1 and cache.bytes == 10 + ENTRY_OVERHEAD
    assert len(cache._data._expiries) <= 2 * len(cache) + 64 + 1
