"""L2 on this machine: one cache shared by every worker of the instance and kept across restarts,
when REDIS_URL is unset.

Built on diskcache (SQLite in WAL mode, plus files for large values): process-safe, bounded in
bytes with its own eviction (least recently stored first), and kept on disk. Entries are the
same `CachedValue.encode()` bytes Redis holds, expiring when even a stale answer would be too
old. Each operation runs in gevent's thread pool, bounded in time: SQLite's calls block, and a
locked or slow disk must cost a request at most `timeout`, like a slow Redis (its own small pool:
each thread holds an SQLite connection and its page cache). After a failure the
tier is left alone for a moment (served from L1 and the model meanwhile); failures are counted,
logged once per interval with the path and the reason, and make /health/ready say degraded.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

import diskcache
import gevent
import gevent.threadpool
from diskcache.core import MODE_BINARY, MODE_RAW

from app.cache.memory import CachedValue

__all__ = ["DiskCache"]

log = logging.getLogger(__name__)

T = TypeVar("T")
# What a disk operation may raise: the directory or database unusable, locked past the timeout,
# the disk full (SQLite's "database or disk is full"), or the operation's own deadline.
_FAILURES = (OSError, sqlite3.Error, diskcache.Timeout, gevent.Timeout)
SIZE_EVERY = 5.0  # seconds: how often a store also reports the tier's size
OPEN_SECONDS = 1.0  # the longest opening (or creating) the database may take
# Threads for the tier's operations, per process: each holds its own SQLite connection and page
# cache (diskcache's connections are per thread), so memory stays at THREADS x PAGE_CACHE per
# directory.
THREADS = 2
PAGE_CACHE_PAGES = 2048  # SQLite pages (4 KiB) cached per connection: 8 MiB


_POOLS: dict[int, gevent.threadpool.ThreadPool] = {}


def _pool() -> gevent.threadpool.ThreadPool:
    """The disk tier's threads, one pool per process (made on first use: in the worker, after
    gevent's patching), shared by every DiskCache in it."""
    pid = os.getpid()
    pool = _POOLS.get(pid)
    if pool is None:
        pool = _POOLS[pid] = gevent.threadpool.ThreadPool(THREADS)
    return pool


class _BytesOnly(diskcache.Disk):
    """diskcache's Disk, refusing anything but raw bytes on the way out: the service stores only
    bytes, so a value in another form (a pickle, which diskcache would load) was not written by
    it, and is never unpickled."""

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode not in (MODE_RAW, MODE_BINARY):
            raise sqlite3.DatabaseError(f"unexpected value mode {mode}: not written by this service")
        return super().fetch(mode, filename, value, read)


class DiskCache:
    """The on-machine L2 (see the module's docstring): get, set, size, the most recent entries."""

    tier = "disk"

    def __init__(
        self,
        directory: str,
        max_bytes: int,
        stale_seconds: float,
        timeout: float = 0.25,
        on_failure: Callable[[], None] | None = None,
        on_size: Callable[[int, int], None] | None = None,
        pause: float = 1.0,
        log_interval: float = 30.0,
    ) -> None:
        self.directory = directory
        self.failures = 0
        self.last_error = ""
        self._max_bytes = max_bytes
        self._stale_seconds = stale_seconds
        self._timeout = timeout
        self._on_failure = on_failure
        self._on_size = on_size
        self._sized_at = -SIZE_EVERY
        self._pause = pause
        self._log_interval = log_interval
        self._last_log = -log_interval
        self._skip_until = 0.0
        self._cache: diskcache.Cache | None = None
        self._open()

    # --- state ------------------------------------------------------------------------------------

    def _open(self) -> bool:
        """Open (or create) the cache directory and its database; False when it cannot be."""
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            self._cache = self._run(
                lambda: diskcache.Cache(
                    self.directory,
                    timeout=self._timeout,
                    disk=_BytesOnly,
                    size_limit=self._max_bytes,
                    eviction_policy="least-recently-stored",
                    sqlite_cache_size=PAGE_CACHE_PAGES,
                    # No memory-mapped reads: a page of a mapped file that a full disk cannot back
                    # is a SIGBUS, which kills the worker; read() fails with an error instead.
                    sqlite_mmap_size=0,
                ),
                timeout=max(self._timeout, OPEN_SECONDS),  # opening takes a few statements
            )
        except _FAILURES as exc:
            self._failed("open", exc)
            return False
        if self._on_size is not None:  # what a restart found on disk, reported from the start
            self._on_size(*self.size())
        return True

    def available(self) -> bool:
        """Open, and not within `pause` seconds of a failure."""
        if time.monotonic() < self._skip_until:
            return False
        return self._cache is not None or self._open()

    def _failed(self, operation: str, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = f"{operation}: {type(exc).__name__}: {exc}"[:300]
        self._skip_until = time.monotonic() + self._pause
        if self._on_failure is not None:
            self._on_failure()
        now = time.monotonic()
        if now - self._last_log >= self._log_interval:
            self._last_log = now
            log.warning(
                "disk cache %s unavailable during %s: %s: %s (failures so far: %d); serving without it",
                self.directory,
                operation,
                type(exc).__name__,
                exc,
                self.failures,
            )

    def _run(self, call: Callable[[], T], timeout: float | None = None) -> T:
        """`call()` in gevent's thread pool, waited for at most `timeout` seconds; its exception
        raised here (caught in the thread: the pool would print it as an unhandled error)."""

        def caught() -> tuple[bool, Any]:
            try:
                return True, call()
            except Exception as exc:
                return False, exc

        ok, outcome = _pool().spawn(caught).get(timeout=timeout or self._timeout)
        if not ok:
            raise outcome
        result: T = outcome
        return result

    def _guarded(self, operation: str, call: Callable[[diskcache.Cache], T], default: T) -> T:
        if not self.available() or self._cache is None:
            return default
        cache = self._cache
        try:
            return self._run(lambda: call(cache))
        except _FAILURES as exc:
            self._failed(operation, exc)
            return default

    # --- the L2 interface -------------------------------------------------------------------------

    def get(self, key: str, *, even_paused: bool = False) -> CachedValue | None:
        """The entry, or None (absent, or the disk failed). `even_paused` is Redis's (a read
        right after the channel's end marker); the disk tier's pause is its own, and holds."""
        raw = self._guarded("get", lambda cache: cache.get(key), None)
        return CachedValue.decode(raw) if isinstance(raw, bytes) else None

    def set(self, key: str, value: CachedValue, *, even_paused: bool = False) -> bool:
        """Store the entry until even a stale answer would be too old; False when it was not
        stored (already too old, or the disk failed)."""
        keep = value.fresh_until + self._stale_seconds - time.time()
        if keep <= 0:
            return False
        data = value.encode()
        now = time.monotonic()
        sizing = self._on_size is not None and now - self._sized_at >= SIZE_EVERY

        def store(cache: diskcache.Cache) -> tuple[bool, tuple[int, int] | None]:
            stored = bool(cache.set(key, data, expire=keep))
            return stored, (len(cache), cache.volume()) if sizing else None

        nothing: tuple[bool, tuple[int, int] | None] = (False, None)
        stored, size = self._guarded("set", store, nothing)
        if size is not None and self._on_size is not None:
            self._sized_at = now
            self._on_size(*size)
        return stored

    def ping(self) -> bool:
        """Whether the tier works now: open, not paused after a failure, and answering a read."""
        if not self.available() or self._cache is None:
            return False
        cache = self._cache
        try:
            self._run(lambda: cache.get("\0ping"))
        except _FAILURES as exc:
            self._failed("ping", exc)
            return False
        return True

    def size(self) -> tuple[int, int]:
        """(entries, bytes on disk); (0, 0) when unknown."""
        return self._guarded("size", lambda cache: (len(cache), cache.volume()), (0, 0))

    def recent(self, limit: int, deadline: float) -> list[tuple[str, CachedValue]]:
        """Up to `limit` entries still worth serving, most recently stored first, read until the
        monotonic `deadline` (what was read by then is returned)."""
        if limit <= 0 or not self.available() or self._cache is None:
            return []
        cache = self._cache

        def scan() -> list[tuple[str, CachedValue]]:
            found: list[tuple[str, CachedValue]] = []
            for key in cache.iterkeys():
                if time.monotonic() >= deadline:
                    break
                raw = cache.get(key)
                value = CachedValue.decode(raw) if isinstance(raw, bytes) else None
                if value is not None:
                    found.append((str(key), value))
            found.sort(key=lambda item: item[1].stored_at, reverse=True)
            return found[:limit]

        try:
            return self._run(scan, timeout=max(0.001, deadline - time.monotonic()) + self._timeout)
        except _FAILURES as exc:
            self._failed("warm", exc)
            return []

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
