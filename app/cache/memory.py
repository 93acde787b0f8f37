"""L1: a per-worker TTL + LRU cache bounded in bytes and in entries (cachetools TLRUCache)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from cachetools import TLRUCache

__all__ = ["CachedValue", "MemoryCache"]

# Per-entry memory the stored bytes do not show, measured with tracemalloc over 20,000 entries:
# cachetools' dict, size, heap and ordered-dict nodes (~230 B), a 41-character key (~90 B), the
# CachedValue (56 B) and the bytes object's header (33 B).
ENTRY_OVERHEAD = 416


@dataclass(frozen=True, slots=True)
class CachedValue:
    """Serialized answer plus the wall-clock times that decide fresh, stale or gone."""

    data: bytes
    stored_at: float
    fresh_until: float

    def is_fresh(self, now: float) -> bool:
        return now < self.fresh_until


class _BoundedTLRU(TLRUCache):
    """TLRUCache that also caps the entry count and counts what it evicts for space."""

    def __init__(self, max_bytes: int, max_entries: int, stale_seconds: float) -> None:
        super().__init__(
            maxsize=max_bytes,
            ttu=lambda _key, value, _now: value.fresh_until + stale_seconds,
            timer=time.time,
            getsizeof=lambda value: len(value.data) + ENTRY_OVERHEAD,
        )
        self.max_entries = max_entries
        self.evictions = 0

    def popitem(self) -> tuple[Any, Any]:
        item = super().popitem()
        self.evictions += 1
        return item

    def __setitem__(self, key: str, value: CachedValue) -> None:  # type: ignore[override]
        if key not in self:
            while len(self) >= self.max_entries:
                self.popitem()
        super().__setitem__(key, value)


class MemoryCache:
    """Per-worker response cache; all operations are plain Python, so no greenlet switch
    happens inside one and no lock is needed under gevent."""

    def __init__(self, max_bytes: int, max_entries: int, stale_seconds: float = 0.0) -> None:
        self.max_bytes = max_bytes
        self._data = _BoundedTLRU(max_bytes, max(1, max_entries), stale_seconds)
        self._enabled = max_bytes > 0 and max_entries > 0
        self.hits = self.misses = self.stale_hits = self.sets = self.rejected = 0

    def get(self, key: str, now: float | None = None) -> CachedValue | None:
        """Return the entry (fresh or stale) and mark it recently used; None when absent."""
        value = self._data.get(key) if self._enabled else None
        if value is None:
            self.misses += 1
        elif value.is_fresh(time.time() if now is None else now):
            self.hits += 1
        else:
            self.stale_hits += 1
        return value

    def set(self, key: str, value: CachedValue) -> bool:
        """Store the entry; return False when it is larger than the whole bound."""
        if not self._enabled:
            return False
        try:
            self._data[key] = value
        except ValueError:  # larger than max_bytes on its own: simply not cached
            self.rejected += 1
            return False
        self.sets += 1
        return True

    def delete(self, key: str) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    @property
    def evictions(self) -> int:
        return self._data.evictions

    @property
    def bytes(self) -> int:
        return int(self._data.currsize)

    def __len__(self) -> int:
        return len(self._data)

    def stats(self) -> dict[str, Any]:
        """Return counters and sizes for /stats and the metrics collector."""
        lookups = self.hits + self.misses + self.stale_hits
        return {
            "hits": self.hits,
            "misses": self.misses,
            "staleHits": self.stale_hits,
            "sets": self.sets,
            "evictions": self.evictions,
            "rejected": self.rejected,
            "hitRate": round(self.hits / lookups, 4) if lookups else 0.0,
            "entries": len(self._data),
            "maxEntries": self._data.max_entries,
            "bytes": self.bytes,
            "maxBytes": self.max_bytes,
            "utilizationPercent": round(100 * self.bytes / self.max_bytes, 2) if self.max_bytes else 0.0,
        }
