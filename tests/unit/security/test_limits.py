"""Rate limits in one app (memory storage): exact counts, headers, per-client keys, exemptions."""

from __future__ import annotations

import pytest

from tests.support import make_app

BODY = {"prompt": "x", "mode": "code"}


def test_limit_headers_and_429() -> None:
    client = make_app({"RATE_LIMIT": "3/minute", "WEB_CONCURRENCY": "1"}).test_client()
    responses = [client.post("/api/optimize", json=BODY) for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r.headers["RateLimit-Remaining"] for r in responses] == ["2", "1", "0", "0"]
    assert responses[0].headers["RateLimit-Limit"] == "3"
    assert responses[0].headers["RateLimit-Policy"] == '3;w=60;comment="counted per worker, 1 worker(s)"'
    assert "Retry-After" not in responses[0].headers
    refused = responses[3]
    assert 1 <= int(refused.headers["Retry-After"]) <= 61  # the window's end, rounded up
    assert refused.get_json()["details"] == "rate limit 3 per 1 minute"


def test_health_metrics_and_preflights_are_never_limited() -> None:
    client = make_app({"RATE_LIMIT": "1/minute"}).test_client()
    assert {client.get("/health").status_code for _ in range(5)} == {200}
    assert {client.open("/api/optimize", method="OPTIONS").status_code for _ in range(5)} == {204}
    assert client.post("/api/optimize", json=BODY).status_code == 200


def test_counted_per_client() -> None:
    client = make_app({"RATE_LIMIT": "1/minute"}).test_client()
    first = client.post("/api/optimize", json=BODY, environ_base={"REMOTE_ADDR": "10.0.0.1"})
    other = client.post("/api/optimize", json=BODY, environ_base={"REMOTE_ADDR": "10.0.0.2"})
    again = client.post("/api/optimize", json=BODY, environ_base={"REMOTE_ADDR": "10.0.0.1"})
    assert (first.status_code, other.status_code, again.status_code) == (200, 200, 429)


def test_no_limit_no_headers() -> None:
    response = make_app().test_client().post("/api/optimize", json=BODY)
    assert "RateLimit-Limit" not in response.headers


def test_the_memory_storage_sweeps_at_most_once_a_second_and_still_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """limits' MemoryStorage starts a timer thread whenever its last one (10 ms) has fired; ours
    sweeps at most once a second, and a counter still expires on time without the sweep."""
    import threading
    import time

    from limits.storage import MemoryStorage

    from app.security._memory_storage import PRIVATE_HOOK, SWEPT_MEMORY_URI, SweptMemoryStorage

    # The adapter overrides a private hook of `limits`: an upgrade that renames it fails here.
    assert callable(getattr(MemoryStorage, PRIVATE_HOOK, None))

    started: list[threading.Timer] = []
    real_start = threading.Timer.start

    def counted_start(self: threading.Timer) -> None:
        started.append(self)
        real_start(self)

    monkeypatch.setattr(threading.Timer, "start", counted_start)
    storage = SweptMemoryStorage(SWEPT_MEMORY_URI)
    began = time.monotonic()
    while time.monotonic() - began < 0.3:  # 30 periods of the base class's 10 ms timer
        storage.incr("k", expiry=0.05)
        time.sleep(0.01)
    assert 1 <= len(started) <= 3  # the constructor's, the first sweep's, and at most one more
    storage.incr("short", expiry=0.05)
    assert storage.get("short") == 1
    time.sleep(0.06)
    assert storage.get("short") == 0  # expired by its own read, not by a sweep


def test_the_memory_storage_calls_its_methods_unwrapped_and_still_counts_a_sliding_window() -> None:
    """`limits` wraps the storage methods of every subclass again (16 nested wrapper calls per
    request for ours): ours are the plain functions, and a sliding window still refuses the
    request over its limit and counts the last window's requests by their overlap."""
    import inspect

    from limits import parse as parse_limit
    from limits.storage import MemoryStorage, storage_from_string
    from limits.strategies import SlidingWindowCounterRateLimiter

    from app.security._memory_storage import SWEPT_MEMORY_URI, SweptMemoryStorage

    for name in ("get", "incr", "acquire_sliding_window_entry", "get_sliding_window", "clear"):
        assert not hasattr(getattr(SweptMemoryStorage, name), "__wrapped__"), name
        assert getattr(SweptMemoryStorage, name) is inspect.unwrap(getattr(MemoryStorage, name)), name
    limiter = SlidingWindowCounterRateLimiter(storage_from_string(SWEPT_MEMORY_URI))
    item = parse_limit("3/minute")
    assert [limiter.hit(item, "a") for _ in range(4)] == [True, True, True, False]
    assert limiter.hit(item, "b")  # another client counts on its own
    assert limiter.get_window_stats(item, "a").remaining == 0


@pytest.mark.parametrize(("limit", "pause"), [("3/minute", 0.0), ("2/hour", 0.0), ("4/second", 1.05)])
def test_the_headers_are_limits_own_window_stats_request_by_request(limit: str, pause: float) -> None:
    """The limiter counts on the storage directly, under the key limits' strategy uses: the
    strategy, reading the same storage, sees every hit, and reckons the same remaining and
    reset after each — through a full window, and (`pause`) into the next one, where the last
    window's hits still count by their overlap."""
    import math
    import time

    from limits.strategies import SlidingWindowCounterRateLimiter

    from app.security.limits import RateLimit
    from config.settings import load_settings

    limiter = RateLimit(load_settings({"APP_ENV": "testing", "RATE_LIMIT": limit}))
    assert limiter.item is not None
    strategy = SlidingWindowCounterRateLimiter(limiter._memory)
    amount = limiter.item.amount
    for phase in ("first window", "next window"):
        if phase == "next window":
            if not pause:
                break
            time.sleep(pause)
        for n in range(amount + 1):
            verdict = limiter.hit("ip:192.0.2.1")
            stats = strategy.get_window_stats(limiter.item, limiter._prefix, "ip:192.0.2.1", "global")
            headers = dict(verdict.headers)
            assert int(headers["RateLimit-Remaining"]) == stats.remaining, (phase, n)
            expected_reset = max(0, math.ceil(int(stats.reset_time + 1) - time.time()))
            assert abs(int(headers["RateLimit-Reset"]) - expected_reset) <= 1, (phase, n)
            if phase == "first window":
                assert verdict.allowed == (n < amount)
                assert ("Retry-After" in headers) == (not verdict.allowed)
