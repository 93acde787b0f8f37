"""The gateway, composed: its Core (app.gateway.core: upstream, cache tiers, calls in flight),
its stream half (app.gateway.streaming's Streams) and, here, its JSON half — Gateway.complete:
key → L1 → L2 → coalesce → breaker + retries → provider → store."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from app.cache import CachedValue
from app.errors import GatewayTimeoutError, ServiceUnavailableError, UpstreamError
from app.gateway.core import Core
from app.gateway.streaming import Stream, Streams
from app.gateway.values import Completion, answer_value, completion_of
from app.providers.base import LLMRequest

__all__ = ["Completion", "Gateway", "NotCached", "Stream"]


class NotCached(Exception):
    """complete(cached_only=True) found no fresh answer in the cache."""


# Errors for which an expired answer beats no answer (stale-if-error).
_STALE_OK = (UpstreamError, ServiceUnavailableError, GatewayTimeoutError)


class Gateway:
    """The one way to a model answer: as JSON (`complete`) or as a stream (`stream`, `join`:
    its Streams part), on its Core (`Gateway(Core(upstream, l1=..., ...))`)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.streams = Streams(core)
        self.stream, self.join = self.streams.stream, self.streams.join
        self.upstream, self.shared_streams = core.upstream, core.shared_streams
        self.calls, self.coalesce = core.calls, core.coalesce
        self.l1, self.l2 = core.l1, core.l2
        self._observer, self._tracer = core.observer, core.tracer
        self.key_for, self._read, self._store_l1 = core.key_for, core.read, core.store_l1

    def complete(
        self,
        request: LLMRequest,
        parse: Callable[[str], Any],
        *,
        read: bool = True,
        write: bool = True,
        cached_only: bool = False,
        peek: bool = False,
    ) -> Completion:
        """Return the answer to `request`, from cache, from an identical call in flight, or
        from the upstream. `parse` turns model text into the payload (raising InvalidAnswerError);
        `read=False` skips cache reads (no-cache); `write=False` also skips storing and
        coalescing (no-store); `cached_only=True` answers only with a fresh cached answer (L1 or
        L2), `peek=True` only with one in this worker's memory (L1): found, it is counted as the
        hit it is; else NotCached, with nothing counted or waited for — the caller asks again
        (a job, a GraphQL operation in a greenlet of its own), and that ask is the one counted."""
        key = self.key_for(request)
        if (peek or cached_only) and not self._holds(key, read, deep=not peek):
            raise NotCached()  # a peek: nothing yields from here to the read below, L1 holds it
        asked = (key, request.mode)
        used = request.caller.keys_used
        if used is not None:
            used.append(key)
        stale, fresh, looked = self._read(key, request, read and write)
        if stale is not None and fresh:
            return completion_of(stale, "HIT", time.time(), looked, asked=asked)
        if cached_only:
            raise NotCached()

        run = self.calls.get(key) if write else None

        def produce() -> CachedValue:
            return self._produce(key, request, parse, write)

        waiting = time.perf_counter()  # the upstream time: its own call, retries, or a follower's wait
        try:
            if run is not None:  # the same answer is being made (a stream, or a JSON call): wait for it
                with self._tracer.span("coalescing.wait") as span:  # counted as waiting meanwhile
                    span.set_attribute("coalescing.role", "follower")
                    value, status = self.calls.wait(run, request.timeout), "COALESCED"
                self._observer.coalesced(request.task, "worker")
            elif write and self.coalesce:
                led = ["MISS"]  # MISS, or COALESCED when the lead found another process's answer

                def lead() -> CachedValue:
                    value, led[0] = self._lead_counted(key, request, produce, read)
                    return value

                with self._tracer.span("coalescing.wait") as span:
                    value, coalesced = self.calls.run(key, lead, request.timeout)
                    status = "COALESCED" if coalesced else led[0]
                    span.set_attribute("coalescing.role", "follower" if status == "COALESCED" else "leader")
                if coalesced:
                    self._observer.coalesced(request.task, "worker")
            else:
                value, status = produce(), "MISS"
        except _STALE_OK:
            if stale is None:
                raise
            self._observer.cache_lookup(request.task, "STALE")
            return completion_of(stale, "STALE", time.time(), looked, time.perf_counter() - waiting, asked)
        return completion_of(value, status, time.time(), looked, time.perf_counter() - waiting, asked)

    def _holds(self, key: str, read: bool, *, deep: bool) -> bool:
        """Whether a fresh answer for `key` is in L1 (or, `deep`, in L2), looked at uncounted."""
        if not read:
            return False
        found = self.l1.get(key) if self.l1 is not None else None
        if found is None and deep and self.l2 is not None:
            found = self.l2.get(key)
        return found is not None and found.is_fresh(time.time())

    def complete_streamed(
        self, request: LLMRequest, parse: Callable[[str], Any], *, draft_model: str | None = None, origin: str = ""
    ) -> Completion:
        """`complete`, made as a stream (the same key, cache and coalescing): whoever `join`s
        it meanwhile gets its events live. The caller follows the stream to its end, so leaving
        (being killed) stops its upstream call unless someone else follows it too."""
        stream = self.stream(request, parse, draft_model=draft_model, origin=origin)
        run = self.calls.get(self.key_for(request))
        for _ in stream.events:
            pass
        if run is None:  # a replay from the cache, or a JSON call's answer: in the cache now
            return self.complete(request, parse)
        value: CachedValue = run.result.get()  # its APIError, when the stream failed
        return completion_of(value, stream.cache_status, time.time(), asked=(self.key_for(request), request.mode))

    def shared(self, key: str) -> bool:
        """Does another caller wait on the JSON call in flight for `key` (here or, via Redis,
        elsewhere)? (A stream goes on by itself while anyone still follows it.)"""
        run = self.calls.get(key)
        if run is not None and run.json and run.followers > 0:
            return True
        return self.shared_streams is not None and self.shared_streams.followers(key) > 0

    def _lead_counted(
        self, key: str, request: LLMRequest, produce: Callable[[], CachedValue], read: bool = True
    ) -> tuple[CachedValue, str]:
        self._observer.in_flight(len(self.calls))
        try:
            return self._lead(key, request, produce, read)
        finally:
            self._observer.in_flight(len(self.calls) - 1)  # this call's entry leaves right after

    def _lead(
        self, key: str, request: LLMRequest, produce: Callable[[], CachedValue], read: bool = True
    ) -> tuple[CachedValue, str]:
        shared = self.shared_streams
        if shared is None:
            return produce(), "MISS"
        found: list[CachedValue] = []

        def unless_stored() -> CachedValue:
            """The lead is ours: look in L2 once more before paying for a call — the answer may
            have landed since our first look (a leader elsewhere finished), or that look may
            have failed on a slow Redis."""
            again = self.l2.get(key) if read and self.l2 is not None else None
            if again is not None and again.fresh_until > time.time():
                found.append(again)
                return again
            return produce()

        # The follower's read comes right after Redis gave it the end marker: even while paused.
        value, remote = shared.run(
            key, unless_stored, request.timeout, lambda: self.l2.get(key, even_paused=True) if self.l2 else None
        )
        if remote or found:
            self._observer.coalesced(request.task, "cluster")
            self._store_l1(key, value)
            return value, "COALESCED"
        return value, "MISS"

    def _produce(self, key: str, request: LLMRequest, parse: Callable[[str], Any], store: bool) -> CachedValue:
        result = self.upstream.call(request)
        value = answer_value(parse(result.text), self.upstream.provider.name, result, request.ttl)
        if store:
            self._store_l1(key, value, new=True)
            if self.l2 is not None:
                self.l2.set(key, value)
        return value
