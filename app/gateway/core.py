"""The part of the gateway both its halves are built on (app.gateway.gateway's JSON calls,
app.gateway.streaming's streams): the upstream, the cache tiers, the calls in flight, the cache
key, the cache read, and storing into L1."""

from __future__ import annotations

import time

from app.cache import CachedValue, DiskCache, MemoryCache, RedisCache
from app.cache.popularity import Popularity
from app.coalescing import SharedStreams
from app.gateway.keys import request_key
from app.gateway.observer import NullObserver, Observer
from app.gateway.streams import InFlight
from app.gateway.tracer import NullTracer, Tracer
from app.gateway.upstream import UpstreamCaller
from app.providers.base import LLMRequest

__all__ = ["Core"]


class Core:
    """The gateway's shared parts. Every part but the upstream is optional (None = off)."""

    def __init__(
        self,
        upstream: UpstreamCaller,
        *,
        l1: MemoryCache | None = None,
        l2: RedisCache | DiskCache | None = None,
        inflight: InFlight | None = None,
        shared_streams: SharedStreams | None = None,
        observer: Observer | None = None,
        tracer: Tracer | None = None,
        popularity: Popularity | None = None,
    ) -> None:
        self.upstream = upstream
        self.l1 = l1
        self.l2 = l2
        self.popularity = popularity  # asks counted for every worker: what a new one warms
        # Calls in flight in this worker, JSON and streams, one entry per key. `inflight` given:
        # identical JSON calls coalesce too (COALESCING_ENABLED); streams always share theirs.
        self.calls = inflight if inflight is not None else InFlight()
        self.coalesce = inflight is not None
        self.shared_streams = shared_streams
        self.observer = observer or NullObserver()
        self.tracer = tracer or NullTracer()

    @property
    def provider_name(self) -> str:
        return self.upstream.provider.name

    @property
    def model(self) -> str:
        """The model the provider asks by default."""
        return self.upstream.provider.model

    @property
    def cache_max_bytes(self) -> int:
        """L1's byte bound (0 with the cache off)."""
        return self.l1.max_bytes if self.l1 is not None else 0

    @property
    def breaker_state(self) -> str:
        """closed, open or half-open."""
        return self.upstream.breaker.state

    def readiness(self) -> dict[str, dict[str, object]]:
        """Checks for /health/ready that never call the paid upstream: provider, breaker, Redis."""
        state = self.breaker_state
        checks: dict[str, dict[str, object]] = {
            "provider": {"status": "ok", "name": self.upstream.provider.name},
            # An open breaker still serves cached and stale answers: a warning, not "not ready".
            "circuitBreaker": {"status": "ok" if state == "closed" else "warn", "state": state},
        }
        for name, check in (("upstreamBudget", self.upstream.budget.readiness()), ("keyBudgets", self._spend_check())):
            if check is not None:
                checks[name] = check
        if isinstance(self.l2, RedisCache):
            # Redis down degrades to L1 and upstream: reported, never fatal.
            checks["redis"] = {"status": "ok" if self.l2.ping() else "warn"}
        elif isinstance(self.l2, DiskCache):
            # So does the disk tier: the path and the last error say what to fix.
            disk = self.l2
            checks["diskCache"] = {"status": "ok" if disk.ping() else "warn", "path": disk.directory}
            if disk.last_error:
                checks["diskCache"]["lastError"] = disk.last_error
        return checks

    def _spend_check(self) -> dict[str, object] | None:
        spend = self.upstream.spend
        return spend.readiness() if spend is not None else None

    def warm(self, limit: int, seconds: float) -> int:
        """Copy up to `limit` answers from L2 into L1, reading for at most `seconds`: the most
        asked lately first where asks are counted (Redis: app.cache.popularity), then the most
        recently stored; return how many were copied (0 without L1 or L2)."""
        if self.l1 is None or self.l2 is None or limit <= 0:
            return 0
        now, deadline = time.time(), time.monotonic() + seconds
        chosen: list[tuple[str, CachedValue]] = []
        if self.popularity is not None and isinstance(self.l2, RedisCache):
            chosen = self.l2.values(self.popularity.likely(limit))
        if len(chosen) < limit:
            have = {key for key, _ in chosen}
            chosen += [item for item in self.l2.recent(limit, deadline) if item[0] not in have][: limit - len(chosen)]
        warmed = 0
        # The likeliest last, so that they stay when L1 is too small for them all.
        for key, value in reversed(chosen):
            if value.fresh_until > now:
                warmed += bool(self.l1.set(key, value))
        if warmed:
            self.observer.cache_size(len(self.l1), self.l1.bytes)
        return warmed

    def key_for(self, request: LLMRequest) -> str:
        """Return the cache key: namespace plus a hash of provider, model and request identity
        (and, with cache scope `key`, the key's name)."""
        provider = self.upstream.provider
        shape = {"provider": provider.name, "model": provider.model, **request.identity()}
        scope = request.caller.scope
        if scope is not None:  # kept apart: only this key's requests share it
            shape["scope"] = scope
        return request_key(request.task, shape)

    def read(self, key: str, request: LLMRequest, read: bool) -> tuple[CachedValue | None, bool, float]:
        """Look `key` up in L1 then L2 when `read` (else count a bypass); return (value, fresh,
        seconds the lookup took).

        The outcome is told to the span of the work in hand (cache.status, cache.tier); only a
        read that leaves the process (L2) has a span of its own: an L1 read takes microseconds,
        a span of its own cost far more than the read."""
        if not read:
            self.observer.cache_lookup(request.task, "BYPASS")
            return None, False, 0.0
        if self.popularity is not None:
            self.popularity.asked(key)
        started = time.perf_counter()
        cached, tier = self._lookup(key, request.task)
        fresh = cached is not None and cached.is_fresh(time.time())
        span = self.tracer.current()
        span.set_attribute("cache.status", "miss" if cached is None else "hit" if fresh else "stale")
        if cached is not None:
            span.set_attribute("cache.tier", tier)
        seconds = time.perf_counter() - started
        self.observer.cache_lookup(request.task, "HIT" if fresh else "MISS", seconds, tier)
        return cached, fresh, seconds

    def _lookup(self, key: str, task: str) -> tuple[CachedValue | None, str]:
        """The entry and the tier it came from (L1, else L2, copied into L1)."""
        cached = self.l1.get(key) if self.l1 is not None else None
        if cached is not None:
            return cached, "l1"
        if self.l2 is not None:
            with self.tracer.span("cache.lookup", {"cache.namespace": task, "cache.tier": self.l2.tier}) as span:
                cached = self.l2.get(key)
                span.set_attribute("cache.status", "miss" if cached is None else "hit")
            if cached is not None:
                self.store_l1(key, cached)
                return cached, self.l2.tier
        return None, "l1"

    def store_l1(self, key: str, value: CachedValue, new: bool = False) -> None:
        """Put `value` in L1; `new` marks an answer this process produced (counted as stored),
        as opposed to a copy from L2 or from another instance's call."""
        if self.l1 is None:
            return
        evicted = self.l1.evictions
        stored = self.l1.set(key, value)
        if self.l1.evictions != evicted:
            self.observer.cache_evicted(self.l1.evictions - evicted)
        if stored and new:
            self.observer.cache_stored()
        self.observer.cache_size(len(self.l1), self.l1.bytes)
