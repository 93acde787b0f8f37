"""L1: a per-worker cache bounded in bytes and in entries, each answer kept until its TTL, the
evictions chosen by S3-FIFO (probation for new answers, another round for reused ones)."""

from __future__ import annotations

import heapq
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import Cache

__all__ = ["CachedValue", "MemoryCache"]

# Per-entry memory the stored bytes do not show, measured with tracemalloc over 20,000 entries of
# 2 KB answers under real keys ("optimize:" + 64 hex characters, 73 in all): cachetools' two
# dicts, the queue's ordered-dict node, the order record, the expiry heap's tuple and the
# CachedValue (432 B), the key string (~122 B) and the bytes object's header (33 B): 587 B.
ENTRY_OVERHEAD = 592


_HEADER = struct.Struct("!dd")  # stored_at, fresh_until


@dataclass(frozen=True, slots=True)
class CachedValue:
    """Serialized answer plus the wall-clock times that decide fresh, stale or gone.

    `encode`/`decode` are its one wire format, used wherever it leaves the worker (the Redis
    cache and the coalescing channel): two doubles, then the answer's bytes."""

    data: bytes
    stored_at: float
    fresh_until: float

    def is_fresh(self, now: float) -> bool:
        return now < self.fresh_until

    def encode(self) -> bytes:
        return _HEADER.pack(self.stored_at, self.fresh_until) + self.data

    @classmethod
    def decode(cls, raw: bytes) -> CachedValue | None:
        """The value `encode` wrote; None for bytes too short to be one."""
        if len(raw) < _HEADER.size:
            return None
        stored_at, fresh_until = _HEADER.unpack_from(raw)
        return cls(bytes(raw[_HEADER.size :]), stored_at, fresh_until)


SMALL_SHARE = 0.1  # of the bytes and of the entries: the probation queue's part


class _Order:
    """Where an entry stands: its queue, how often it was asked (up to 3), when it expires."""

    __slots__ = ("expires", "freq", "main", "seq")

    def __init__(self, expires: float, seq: int, main: bool) -> None:
        self.expires, self.seq, self.main, self.freq = expires, seq, main, 0


class _S3Fifo(Cache):  # type: ignore[type-arg]
    """cachetools' Cache (the mapping, and the byte count through `getsizeof`) evicting by
    S3-FIFO (Yang et al., SOSP 2023), each entry expiring at its own time, bounded in entries too.

    A new answer enters a small FIFO queue (10 %); asked again while there, it moves to the main
    queue when it reaches the head, else it leaves — an answer asked once (most are) costs little
    and pushes out nothing that is reused. The main queue gives each entry another round for each
    time it was asked (up to 3). A ghost list remembers keys that left the small queue: asked
    again, an answer goes straight to main. Replayed on generated traces under an entry bound it
    kept 7-26 % more hits than the LRU it replaced, at the same bytes (docs/performance.md,
    `make replay`). A hit only counts — no reordering, cheaper than LRU's move to the end.
    An entry leaves at its `fresh_until` + the stale window, from a heap of expiries."""

    def __init__(self, max_bytes: int, max_entries: int, stale_seconds: float, clock: Callable[[], float]) -> None:
        super().__init__(maxsize=max_bytes, getsizeof=lambda value: len(value.data) + ENTRY_OVERHEAD)
        self.max_entries, self._stale, self._clock = max_entries, stale_seconds, clock
        self._order: dict[str, _Order] = {}
        self._small: OrderedDict[str, None] = OrderedDict()
        self._main: OrderedDict[str, None] = OrderedDict()
        self._ghost: OrderedDict[str, None] = OrderedDict()
        self._expiries: list[tuple[float, int, str]] = []
        self._seq = 0
        self.small_bytes = self.reserved = self.evictions = 0

    def find(self, key: str) -> CachedValue | None:
        """The entry, counted as asked; None when absent or past its stale window."""
        order = self._order.get(key)
        if order is None:
            return None
        if order.expires <= self._clock():
            del self[key]
            return None
        if order.freq < 3:
            order.freq += 1
        value: CachedValue = Cache.__getitem__(self, key)
        return value

    def __setitem__(self, key: str, value: CachedValue) -> None:
        now = self._clock()
        self._expire(now)
        if key in self:
            del self[key]  # replaced: the new answer starts again
        expires = value.fresh_until + self._stale
        if expires <= now:
            return  # too old to serve even stale: nothing to keep
        size = len(value.data) + ENTRY_OVERHEAD
        if size + self.reserved > self.maxsize:
            raise ValueError("value too large beside the reserved bytes")
        while len(self) >= self.max_entries or (len(self) and self.currsize + size + self.reserved > self.maxsize):
            self.popitem()  # room made before the new entry is queued: it never evicts itself
        super().__setitem__(key, value)
        main = key in self._ghost  # left the small queue before and asked again: straight to main
        if main:
            del self._ghost[key]
        self._seq += 1
        self._order[key] = _Order(expires, self._seq, main)
        (self._main if main else self._small)[key] = None
        if not main:
            self.small_bytes += size
        heapq.heappush(self._expiries, (expires, self._seq, key))
        if len(self._expiries) > 2 * len(self._order) + 64:  # leftovers of replaced entries
            self._expiries = [(o.expires, o.seq, k) for k, o in self._order.items()]
            heapq.heapify(self._expiries)

    def __delitem__(self, key: str) -> None:
        """Remove an entry (expired, replaced or evicted) from the mapping and its queue."""
        order = self._order.pop(key)
        if order.main:
            del self._main[key]
        else:
            del self._small[key]
            self.small_bytes -= self._size(key)
        super().__delitem__(key)

    def _size(self, key: str) -> int:
        return len(Cache.__getitem__(self, key).data) + ENTRY_OVERHEAD

    def make_room(self) -> None:
        """Evict until the entries and the reservations fit the byte bound."""
        while self.currsize and self.currsize + self.reserved > self.maxsize:
            self.popitem()

    def popitem(self) -> tuple[str, CachedValue]:
        """Evict one entry, chosen by S3-FIFO (entries asked again get another round)."""
        while True:
            small_over = (
                self.small_bytes > SMALL_SHARE * self.maxsize or len(self._small) > SMALL_SHARE * self.max_entries
            )
            if self._small and (small_over or not self._main):
                key = next(iter(self._small))
                order = self._order[key]
                if order.freq > 0:  # asked again while on probation: promoted
                    del self._small[key]
                    self.small_bytes -= self._size(key)
                    order.main, order.freq = True, 0
                    self._main[key] = None
                    continue
                self._ghost[key] = None
                while len(self._ghost) > max(1, len(self)):
                    self._ghost.popitem(last=False)
            else:
                key = next(iter(self._main))  # callers pop only while an entry is held
                order = self._order[key]
                if order.freq > 0:
                    order.freq -= 1
                    self._main.move_to_end(key)
                    continue
            value: CachedValue = Cache.__getitem__(self, key)
            del self[key]
            self.evictions += 1
            return key, value

    def _expire(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            _, seq, key = heapq.heappop(self._expiries)
            order = self._order.get(key)
            if order is not None and order.seq == seq:
                del self[key]


class MemoryCache:
    """Per-worker response cache; all operations are plain Python, so no greenlet switch
    happens inside one and no lock is needed under gevent. `clock`: wall-clock seconds (the
    replayer, loadtest/replay.py, runs it on a simulated one)."""

    def __init__(
        self, max_bytes: int, max_entries: int, stale_seconds: float = 0.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.max_bytes = max_bytes
        self._data = _S3Fifo(max_bytes, max(1, max_entries), stale_seconds, clock)
        self._enabled = max_bytes > 0 and max_entries > 0

    def get(self, key: str) -> CachedValue | None:
        """Return the entry (fresh or stale) and count the hit; None when absent."""
        return self._data.find(key) if self._enabled else None

    def set(self, key: str, value: CachedValue) -> bool:
        """Store the entry; return False when it is larger than the whole bound (beside what is
        reserved): simply not cached, and nothing evicted for it."""
        if not self._enabled:
            return False
        try:
            self._data[key] = value
        except ValueError:  # larger than the bound on its own: simply not cached
            return False
        return True

    def reserve(self, size: int) -> None:
        """Count `size` bytes held elsewhere against the bound (an in-flight stream's buffer):
        entries make room for them, in eviction order."""
        self._data.reserved += size
        self._data.make_room()

    def release(self, size: int) -> None:
        """Those bytes are gone again."""
        self._data.reserved = max(0, self._data.reserved - size)

    @property
    def reserved(self) -> int:
        return self._data.reserved

    @property
    def evictions(self) -> int:
        return self._data.evictions

    @property
    def bytes(self) -> int:
        return int(self._data.currsize)

    def __len__(self) -> int:
        return len(self._data)
