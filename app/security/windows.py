"""RATE_LIMIT counted in one worker's memory (no REDIS_URL): the sliding window counter that
limits' storages keep — per client, the count of this window and of the last, the last weighted
by how much of it the sliding window still covers — as plain dict operations.

limits' MemoryStorage keeps the same two counters for threads: a lock per key, an expiry per
counter checked on every read, a timer thread to sweep them. In a gevent worker nothing switches
greenlets between two dict operations, and that bookkeeping was 67 Python calls a request, 5 %
of a cached answer (docs/performance.md). The numbers here are limits' own: a test holds the two
to one table of hits, gaps and window changes (tests/unit/security/test_limits.py). With
REDIS_URL, limits' Redis storage counts (app.security.limits).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["WorkerWindows"]


class WorkerWindows:
    """The two storage calls RateLimit makes (`acquire_sliding_window_entry`,
    `get_sliding_window`, as limits names them), for one worker's clients."""

    SWEEP_SECONDS = 60.0  # how often counters of windows that no longer count are dropped

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # key → [window number, last window's count, this window's count, window seconds]
        self._windows: dict[str, list[float]] = {}
        self._next_sweep = clock() + self.SWEEP_SECONDS

    def _counts(self, key: str, expiry: int, now: float) -> tuple[int, float, float]:
        """(this window's number, the last window's count, this window's count)."""
        number = int(now / expiry)
        entry = self._windows.get(key)
        if entry is None or entry[0] < number - 1:
            return number, 0, 0
        if entry[0] == number - 1:
            return number, entry[2], 0
        return number, entry[1], entry[2]

    def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Count `amount` more in this window unless the weighted count would pass `limit`."""
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        if amount > limit:
            return False
        number, previous, current = self._counts(key, expiry, now)
        if math.floor(previous * _previous_left(previous, expiry, now) / expiry + current) + amount > limit:
            return False
        self._windows[key] = [number, previous, current + amount, expiry]
        return True

    def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        """(the last window's count, its seconds still covered, this window's count, seconds
        until this window's count stops counting), as limits' storages read them."""
        now = self._clock()
        _, previous, current = self._counts(key, expiry, now)
        current_left = (1 - ((now / expiry) % 1)) * expiry + expiry
        return int(previous), _previous_left(previous, expiry, now), int(current), current_left

    def _sweep(self, now: float) -> None:
        """Drop the counters of clients whose windows no longer count (none in the last two)."""
        self._next_sweep = now + self.SWEEP_SECONDS
        stale = [key for key, (number, _, _, expiry) in self._windows.items() if number < int(now / expiry) - 1]
        for key in stale:
            del self._windows[key]

    def __len__(self) -> int:
        return len(self._windows)


def _previous_left(previous: float, expiry: int, now: float) -> float:
    """Seconds of the last window the sliding window still covers (0 when it counted nothing)."""
    return (1 - (((now - expiry) / expiry) % 1)) * expiry if previous else 0.0
