"""The one adapter onto a dependency's internals: `limits`' MemoryStorage, sweeping expired
counters at most once a second.

The base class starts a new `threading.Timer` (10 ms) on a request whenever the last one has
fired: under gevent a new greenlet-backed thread every 10 ms, a measurable share of a busy
worker's CPU (py-spy; docs/performance.md). Counts do not depend on the sweep (each read
drops an expired counter itself); it only frees memory, and a second's delay there is harmless.
`limits` has no public hook for the sweep: this overrides its private one, by its mangled name,
and tests/unit/security/test_limits.py fails if an upgrade renames or drops it.

`limits` wraps each storage method of every storage class it meets (`__init_subclass__`), so a
subclass wraps the wrappers of its base again: 16 nested wrapper calls per counted request, two
fifths of the limiter's time (py-spy and cProfile; docs/performance.md). The wrapper only turns
the storage's own exceptions into StorageError when `wrap_exceptions` is set, which this storage
never is (and a dict raises none): the methods here are the base's, unwrapped.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

from limits.storage import MemoryStorage

__all__ = ["SWEPT_MEMORY_URI", "SweptMemoryStorage"]

SWEPT_MEMORY_URI = "pb+memory://"
PRIVATE_HOOK = "_MemoryStorage__schedule_expiry"


class SweptMemoryStorage(MemoryStorage):
    STORAGE_SCHEME = [SWEPT_MEMORY_URI.removesuffix("://")]
    SWEEP_SECONDS = 1.0

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        self._next_sweep = 0.0
        super().__init__(uri, **options)

    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.SWEEP_SECONDS
            super()._MemoryStorage__schedule_expiry()  # type: ignore[misc]


def _unwrapped(cls: type) -> None:
    """Give `cls` each method `limits` wrapped, as the function it wraps."""
    for name in dir(cls):
        method = getattr(cls, name)
        if hasattr(method, "__wrapped__"):
            setattr(cls, name, inspect.unwrap(method))


_unwrapped(SweptMemoryStorage)
