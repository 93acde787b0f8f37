"""L2: the cache shared by every worker and instance, in Redis; never fails a request."""

from __future__ import annotations

import logging
import time
from typing import cast

import redis

from app.cache.health import RedisHealth
from app.cache.memory import CachedValue

__all__ = ["RedisCache"]

log = logging.getLogger(__name__)


class RedisCache:
    """Entries are CachedValue.encode() bytes, expiring when even a stale answer would be too old."""

    tier = "redis"

    def __init__(self, client: redis.Redis, prefix: str, stale_seconds: float, health: RedisHealth) -> None:
        self._client = client
        self._prefix = f"{prefix}cache:"
        self._stale_seconds = stale_seconds
        self.health = health

    def _key(self, key: str) -> str:
        # The hash tag puts an answer in the same Redis Cluster slot as its call's lock and stream.
        return self._prefix + "{" + key + "}"

    def get(self, key: str, *, even_paused: bool = False) -> CachedValue | None:
        """The entry, or None (absent, or Redis failed). `even_paused`: ask while Redis is paused
        after a failure too — for a read right after Redis answered (a follower that has just
        read its leader's end marker: the answer is there, and the pause must not hide it)."""
        client = getattr(self._client, "plain", self._client) if even_paused else self._client
        for attempt in (1, 2):
            try:
                raw = cast("bytes | None", client.get(self._key(key)))
                break
            except redis.TimeoutError as exc:  # slow, not gone: a read is worth a second try
                self.health.failed("cache get", exc)  # before a miss costs a model call
                if attempt == 2:
                    return None
            except redis.RedisError as exc:
                self.health.failed("cache get", exc)
                return None
        return None if raw is None else CachedValue.decode(raw)

    def set(self, key: str, value: CachedValue, *, even_paused: bool = False) -> bool:
        """Store the entry; return False when it was not stored (already too old, or Redis failed).
        `even_paused`: try while Redis is paused after a failure too (for a store no caller waits
        for, which followers elsewhere need)."""
        keep = value.fresh_until + self._stale_seconds - time.time()
        if keep <= 0:
            return False
        client = getattr(self._client, "plain", self._client) if even_paused else self._client
        data = value.encode()
        for attempt in (1, 2):
            try:
                client.set(self._key(key), data, px=max(1, int(keep * 1000)))
                return True
            except redis.TimeoutError as exc:  # slow, not gone: followers elsewhere read it from here
                self.health.failed("cache set", exc)
                if attempt == 2:
                    return False
            except redis.RedisError as exc:
                self.health.failed("cache set", exc)
                return False
        return False

    def recent(self, limit: int, deadline: float) -> list[tuple[str, CachedValue]]:
        """Up to `limit` entries still worth serving, most recently stored first, read until the
        monotonic `deadline` (what was read by then: a large Redis is sampled, not read whole)."""
        if limit <= 0:
            return []
        found: list[tuple[str, CachedValue]] = []
        skip = len(self._prefix) + 1  # the prefix and the hash tag's opening brace
        try:
            batch: list[bytes] = []
            for name in self._client.scan_iter(match=self._prefix + "*", count=500):
                batch.append(name)
                if len(batch) == 500 or time.monotonic() >= deadline:
                    found += self._decoded(batch, skip)
                    batch = []
                if time.monotonic() >= deadline:
                    break
            found += self._decoded(batch, skip)
        except redis.RedisError as exc:
            self.health.failed("cache warm", exc)
        found.sort(key=lambda item: item[1].stored_at, reverse=True)
        return found[:limit]

    def values(self, keys: list[str]) -> list[tuple[str, CachedValue]]:
        """The entries of `keys` that are still held, in that order ([] when Redis fails)."""
        try:
            return self._decoded([self._key(key).encode() for key in keys], len(self._prefix) + 1)
        except redis.RedisError as exc:
            self.health.failed("cache warm", exc)
            return []

    def _decoded(self, names: list[bytes], skip: int) -> list[tuple[str, CachedValue]]:
        if not names:
            return []
        pipe = self._client.pipeline(transaction=False)  # GETs, not MGET: a cluster's keys span slots
        for name in names:
            pipe.get(name)
        raws = cast("list[bytes | None]", pipe.execute())
        pairs = []
        for name, raw in zip(names, raws, strict=True):
            value = CachedValue.decode(raw) if raw else None
            if value is not None:
                pairs.append((name.decode()[skip:-1], value))
        return pairs

    def ping(self) -> bool:
        """Whether Redis answers now (asked even while paused: readiness must tell the truth)."""
        try:
            return bool(getattr(self._client, "plain", self._client).ping())
        except redis.RedisError as exc:
            self.health.failed("ping", exc)
            return False
