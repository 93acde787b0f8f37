"""Gateway.complete: key → L1 → L2 → coalesce → breaker + retries → provider → store."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.cache import CachedValue, MemoryCache, RedisCache
from app.coalescing import InFlight, RedisCoalescer
from app.errors import GatewayTimeoutError, ServiceUnavailableError, UpstreamError
from app.gateway.keys import request_key
from app.gateway.observer import NullObserver, Observer
from app.gateway.tracer import NullTracer, Tracer
from app.gateway.upstream import UpstreamCaller
from app.providers.base import LLMRequest

__all__ = ["Completion", "Gateway"]

# Errors for which an expired answer beats no answer (stale-if-error).
_STALE_OK = (UpstreamError, ServiceUnavailableError, GatewayTimeoutError)


@dataclass(frozen=True)
class Completion:
    """An answer as the service sees it: parsed payload, who made it, and where it came from."""

    payload: Any
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_status: str  # HIT | MISS | COALESCED | STALE
    age: int  # seconds since the upstream produced it


def _encode(payload: Any, provider: str, model: str, usage: tuple[int, int]) -> bytes:
    return json.dumps(
        {"p": payload, "v": provider, "m": model, "u": usage}, ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")


def _completion(value: CachedValue, status: str, now: float) -> Completion:
    data = json.loads(value.data)
    return Completion(
        payload=data["p"],
        provider=data["v"],
        model=data["m"],
        input_tokens=data["u"][0],
        output_tokens=data["u"][1],
        cache_status=status,
        age=max(0, int(now - value.stored_at)),
    )


class Gateway:
    """The one way to a model answer. Every part but the upstream is optional (None = off)."""

    def __init__(
        self,
        upstream: UpstreamCaller,
        *,
        l1: MemoryCache | None = None,
        l2: RedisCache | None = None,
        inflight: InFlight | None = None,
        shared: RedisCoalescer | None = None,
        observer: Observer | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.upstream = upstream
        self.l1 = l1
        self.l2 = l2
        self.inflight = inflight
        self.shared = shared
        self._observer = observer or NullObserver()
        self._tracer = tracer or NullTracer()

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
        if self.l2 is not None:
            # Redis down degrades to L1 and upstream: reported, never fatal.
            checks["redis"] = {"status": "ok" if self.l2.ping() else "warn"}
        return checks

    def key_for(self, request: LLMRequest) -> str:
        """Return the cache key: namespace plus a hash of provider, model and request identity."""
        provider = self.upstream.provider
        shape = {"provider": provider.name, "model": provider.model, **request.identity()}
        return request_key(request.task, shape)

    def complete(
        self,
        request: LLMRequest,
        parse: Callable[[str], Any],
        *,
        read: bool = True,
        write: bool = True,
    ) -> Completion:
        """Return the answer to `request`, from cache, from an identical call in flight, or
        from the upstream. `parse` turns model text into the payload (raising InvalidAnswerError);
        `read=False` skips cache reads (no-cache); `write=False` also skips storing and
        coalescing (no-store)."""
        key = self.key_for(request)
        stale: CachedValue | None = None
        if read and write:
            started = time.perf_counter()
            with self._tracer.span("cache.lookup", {"cache.namespace": request.task}) as span:
                cached = self._lookup(key)
                now = time.time()
                status = "MISS" if cached is None else "HIT" if cached.is_fresh(now) else "STALE"
                span.set_attribute("cache.status", status.lower())
            self._observer.cache_lookup(
                request.task, "HIT" if status == "HIT" else "MISS", time.perf_counter() - started
            )
            if cached is not None and status == "HIT":
                return _completion(cached, "HIT", now)
            stale = cached
        else:
            self._observer.cache_lookup(request.task, "BYPASS")

        def produce() -> CachedValue:
            return self._produce(key, request, parse, write)

        waiting = time.perf_counter()
        try:
            if write and self.inflight is not None:
                with self._tracer.span("coalescing.wait") as span:
                    (value, status), coalesced = self.inflight.run(
                        key, lambda: self._lead_counted(key, request, produce), request.timeout
                    )
                    role = "follower" if coalesced or status == "COALESCED" else "leader"
                    span.set_attribute("coalescing.role", role)
                if coalesced:
                    status = "COALESCED"
                    self._observer.coalesced(request.task, "worker")
            else:
                value, status = produce(), "MISS"
        except _STALE_OK:
            if stale is None:
                raise
            self._observer.cache_lookup(request.task, "STALE")
            return _completion(stale, "STALE", time.time())
        finally:
            self._observer.upstream_wait(time.perf_counter() - waiting)
        return _completion(value, status, time.time())

    def _lookup(self, key: str) -> CachedValue | None:
        cached = self.l1.get(key) if self.l1 is not None else None
        if cached is None and self.l2 is not None:
            cached = self.l2.get(key)
            if cached is not None:
                self._store_l1(key, cached)
        return cached

    def _lead_counted(
        self, key: str, request: LLMRequest, produce: Callable[[], CachedValue]
    ) -> tuple[CachedValue, str]:
        assert self.inflight is not None
        self._observer.in_flight(len(self.inflight))
        try:
            return self._lead(key, request, produce)
        finally:
            self._observer.in_flight(len(self.inflight) - 1)  # this call's entry leaves right after

    def _lead(self, key: str, request: LLMRequest, produce: Callable[[], CachedValue]) -> tuple[CachedValue, str]:
        if self.shared is None:
            return produce(), "MISS"
        value, remote = self.shared.run(key, produce, request.timeout)
        if remote:
            self._observer.coalesced(request.task, "cluster")
            self._store_l1(key, value)
            return value, "COALESCED"
        return value, "MISS"

    def _produce(self, key: str, request: LLMRequest, parse: Callable[[str], Any], store: bool) -> CachedValue:
        result = self.upstream.call(request)
        payload = parse(result.text)
        now = time.time()
        value = CachedValue(
            _encode(payload, self.upstream.provider.name, result.model, (result.input_tokens, result.output_tokens)),
            stored_at=now,
            fresh_until=now + request.ttl,
        )
        if store:
            self._store_l1(key, value, new=True)
            if self.l2 is not None:
                self.l2.set(key, value)
        return value

    def _store_l1(self, key: str, value: CachedValue, new: bool = False) -> None:
        """Put `value` in L1; `new` marks an answer this process produced (counted as stored),
        as opposed to a copy from L2 or from another instance's call."""
        if self.l1 is None:
            return
        evicted = self.l1.evictions
        stored = self.l1.set(key, value)
        if self.l1.evictions != evicted:
            self._observer.cache_evicted(self.l1.evictions - evicted)
        if stored and new:
            self._observer.cache_stored()
        self._observer.cache_size(len(self.l1), self.l1.bytes)
