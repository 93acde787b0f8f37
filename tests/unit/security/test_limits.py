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


# (seconds to wait before, requests made) — hits, gaps within a window, into the next window
# (the last one's count weighted by its overlap), past two windows (nothing counts), and back.
TIMELINE = [(0.0, 4), (2.5, 3), (4.0, 2), (3.9, 6), (0.2, 1), (7.0, 5), (25.0, 2), (9.99, 7), (0.02, 3)]


@pytest.mark.parametrize(("amount", "expiry"), [(5, 10), (1, 10), (3, 7), (100, 10)])
@pytest.mark.parametrize("start", [1_700_000_000.0, 1_700_000_003.3, 1_700_000_009.999])
def test_worker_windows_count_as_limits_memory_storage_does(
    monkeypatch: pytest.MonkeyPatch, amount: int, expiry: int, start: float
) -> None:
    """The worker's own counters give, hit by hit, the answers and window readings limits'
    MemoryStorage gives on the same clock: the same admissions, the same weighted remainder."""
    import types

    from limits.storage import MemoryStorage

    from app.security.windows import WorkerWindows

    now = [start]
    monkeypatch.setattr("limits.storage.memory.time", types.SimpleNamespace(time=lambda: now[0]))
    theirs, ours = MemoryStorage(), WorkerWindows(clock=lambda: now[0])
    for step, (wait, requests) in enumerate(TIMELINE):
        now[0] += wait
        for n in range(requests):
            for key in ("a", "b" if n % 2 else "a"):
                assert ours.acquire_sliding_window_entry(key, amount, expiry) == (
                    theirs.acquire_sliding_window_entry(key, amount, expiry)
                ), (step, n, key)
                assert ours.get_sliding_window(key, expiry) == pytest.approx(theirs.get_sliding_window(key, expiry))
    assert not ours.acquire_sliding_window_entry("c", 1, expiry, amount=2)  # more than the limit at once


def test_worker_windows_forget_clients_whose_windows_no_longer_count() -> None:
    from app.security.windows import WorkerWindows

    now = [1_700_000_000.0]
    windows = WorkerWindows(clock=lambda: now[0])
    for client in range(1000):
        assert windows.acquire_sliding_window_entry(f"ip:{client}", 10, 60)
    now[0] += WorkerWindows.SWEEP_SECONDS + 1  # the next window: they still count, by their overlap
    windows.acquire_sliding_window_entry("ip:late", 10, 60)
    assert len(windows) == 1001
    now[0] += 2 * 60 + WorkerWindows.SWEEP_SECONDS  # two windows on: nothing of theirs counts
    windows.acquire_sliding_window_entry("ip:new", 10, 60)
    assert len(windows) == 1
    assert windows.get_sliding_window("ip:0", 60)[::2] == (0, 0)


@pytest.mark.parametrize(("limit", "pause"), [("3/minute", 61.0), ("2/hour", 1800.0), ("4/second", 1.05)])
def test_the_headers_are_limits_own_window_stats_request_by_request(
    monkeypatch: pytest.MonkeyPatch, limit: str, pause: float
) -> None:
    """The RateLimit headers after each request are what limits' strategy reckons — its
    admissions, remaining and reset — for the same requests at the same times: through a full
    window, and (`pause`) into the next one, where the last window's hits count by overlap."""
    import math
    import types

    from limits.storage import MemoryStorage
    from limits.strategies import SlidingWindowCounterRateLimiter

    from app.security.limits import RateLimit
    from app.security.windows import WorkerWindows
    from config.settings import load_settings

    now = [1_700_000_000.25]
    clock = types.SimpleNamespace(time=lambda: now[0])
    for module in ("limits.storage.memory", "limits.strategies", "app.security.limits"):
        monkeypatch.setattr(f"{module}.time", clock)
    limiter = RateLimit(load_settings({"APP_ENV": "testing", "RATE_LIMIT": limit}))
    limiter._memory = WorkerWindows(clock=clock.time)
    item = limiter.item
    assert item is not None
    strategy = SlidingWindowCounterRateLimiter(MemoryStorage())
    for phase in ("first window", "next window"):
        now[0] += pause if phase == "next window" else 0.0
        for n in range(item.amount + 1):
            verdict = limiter.hit("ip:192.0.2.1")
            assert verdict.allowed == strategy.hit(item, limiter._prefix, "ip:192.0.2.1", "global"), (phase, n)
            stats = strategy.get_window_stats(item, limiter._prefix, "ip:192.0.2.1", "global")
            headers = dict(verdict.headers)
            assert int(headers["RateLimit-Remaining"]) == stats.remaining, (phase, n)
            assert int(headers["RateLimit-Reset"]) == max(0, math.ceil(int(stats.reset_time + 1) - now[0])), (phase, n)
            assert ("Retry-After" in headers) == (not verdict.allowed)
            now[0] += 0.01
