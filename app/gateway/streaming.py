"""The gateway's stream half (`Streams`, a part of Gateway built on its Core): an answer as
server-sent events — replayed from the cache, joined to an identical stream or JSON call in
flight (in this worker, or in another process through Redis: app.gateway.following), or
streamed from the upstream by one producer greenlet per key."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gevent
import redis

from app.cache import CachedValue
from app.coalescing import SharedStreams
from app.coordination.lease import Lease
from app.errors import APIError, GatewayTimeoutError, ServiceUnavailableError
from app.gateway.core import Core
from app.gateway.following import Following
from app.gateway.replay import DONE, error_event, refined, replay
from app.gateway.streams import Stream, StreamJob, StreamRun, Tee, sse_event
from app.gateway.tracer import spawn
from app.gateway.values import answer_value
from app.iterators import observed
from app.providers.base import LLMRequest, ProviderResult

__all__ = ["HEARTBEAT_SECONDS", "Stream", "StreamJob", "Streams"]

log = logging.getLogger(__name__)

# Seconds of silence after which a stream's caller gets an SSE comment: keeps proxies from timing
# out, and a caller who left is noticed within a beat or two, so an unfollowed stream stops soon.
HEARTBEAT_SECONDS = 0.25
ORPHAN_POLL = 0.25  # seconds between an orphaned stream's checks for followers elsewhere


@dataclass
class _Production:
    """One producer's stream as it goes: what its stages share."""

    run: StreamRun
    request: LLMRequest
    begun: float  # perf_counter at the start
    deadline: float  # monotonic: the whole stream's, draft stage included
    shared: SharedStreams | None  # leading for other processes too
    first: float | None = None  # perf_counter of the first delta
    span: Any = None


class Streams:
    """The stream half of the gateway, on the Core it shares with the JSON half."""

    def __init__(self, core: Core) -> None:
        self.upstream, self.calls, self.shared_streams = core.upstream, core.calls, core.shared_streams
        self.l1, self.l2 = core.l1, core.l2
        self._observer, self._tracer = core.observer, core.tracer
        self.key_for, self._read, self._store_l1 = core.key_for, core.read, core.store_l1
        self._buffered = 0  # bytes held by the buffers of streams in flight, counted against L1
        self._following = Following(core, self.produce, self.forget) if core.shared_streams is not None else None

    def stream(
        self,
        request: LLMRequest,
        parse: Callable[[str], Any],
        *,
        read: bool = True,
        write: bool = True,
        draft_model: str | None = None,
        origin: str = "",
    ) -> Stream:
        """Return the answer to `request` as server-sent events: replayed from the cache, joined
        to an identical stream or JSON call in flight, or streamed from the upstream (one
        upstream stream per key in this worker). `origin` names the request that starts a new
        stream (in its error event)."""
        key = self.key_for(request)
        cached, fresh, looked = self._read(key, request, read and write)
        if cached is not None and fresh:
            return Stream("HIT", self._counted(iter([replay(cached, request.mode)])), looked)
        found = self.calls.get(key) if write else None
        if found is not None:  # the same answer is in flight: a stream's events, or a JSON call's outcome
            self._observer.coalesced(request.task, "worker")
            self._observer.stream_follower("worker")
            events = self._after(found, request, origin) if found.json else found.follow(HEARTBEAT_SECONDS)
            return Stream("COALESCED", self._counted(events), looked)
        refused = self.upstream.breaker.refusal()
        if refused is not None:  # known before any header is sent: no stream to start
            if cached is None:
                raise refused  # 503 JSON with Retry-After, as /api/optimize answers
            self._observer.cache_lookup(request.task, "STALE")
            return Stream("STALE", self._counted(iter([replay(cached, request.mode)])), looked)
        job = StreamJob(request, parse, write, draft_model, origin)
        run = StreamRun(key, on_idle=self._cancel, on_size=self._buffer_changed)
        if write:
            self.calls.add(run)
        lock = None
        # Redis failed a moment ago: stream on our own until its pause is over.
        if write and self.shared_streams is not None and self.shared_streams.health.available():
            try:
                lock = self.shared_streams.claim(key)
            except redis.RedisError as exc:
                self.shared_streams.health.failed("stream claim", exc)  # stream on our own
            else:
                if lock is None:  # another process streams this key: follow it through Redis
                    self._observer.coalesced(request.task, "cluster")
                    self._observer.stream_follower("cluster")
                    run.producer = spawn(self._tracer, self._follow, job, run)
                    return Stream("COALESCED", self._counted(run.follow(HEARTBEAT_SECONDS)), looked)
        run.producer = spawn(self._tracer, self.produce, job, run, lock)
        # Let the producer send its upstream request now, while this request's response hooks
        # run: the upstream's wait then overlaps our own work (docs/performance.md).
        gevent.sleep(0)
        return Stream("MISS", self._counted(run.follow(HEARTBEAT_SECONDS)), looked)

    def join(self, request: LLMRequest, parse: Callable[[str], Any], *, origin: str = "") -> Stream | None:
        """The stream of `request` in flight — in this worker, or (with Redis) led by another
        process — followed from its first event; None when none is in flight. Never starts an
        upstream call of its own (a job's events follow the job's call this way)."""
        key = self.key_for(request)
        run = self.calls.get(key)
        if run is not None and not run.json:
            self._observer.stream_follower("worker")
            return Stream("COALESCED", self._counted(run.follow(HEARTBEAT_SECONDS)))
        shared = self.shared_streams
        if shared is None or not shared.health.available():
            return None
        try:
            lock = shared.claim(key)
        except redis.RedisError as exc:
            shared.health.failed("stream claim", exc)
            return None
        if lock is not None:  # nobody leads this key: nothing to follow
            shared.release(lock)
            return None
        self._observer.stream_follower("cluster")
        run = StreamRun(key, on_idle=self._cancel, on_size=self._buffer_changed)
        self.calls.add(run)
        run.producer = spawn(self._tracer, self._follow, StreamJob(request, parse, True, None, origin), run)
        return Stream("COALESCED", self._counted(run.follow(HEARTBEAT_SECONDS)))

    def _buffer_changed(self, change: int) -> None:
        """Stream buffers hold `change` more (or fewer) bytes: they take room from L1 while the
        streams last, so one byte bound covers cached answers and answers being written."""
        self._buffered += change
        if self.l1 is not None:
            if change > 0:
                evicted = self.l1.evictions
                self.l1.reserve(change)
                if self.l1.evictions != evicted:
                    self._observer.cache_evicted(self.l1.evictions - evicted)
                    self._observer.cache_size(len(self.l1), self.l1.bytes)
            else:
                self.l1.release(-change)
        self._observer.stream_buffers(self._buffered)

    def _counted(self, events: Iterator[bytes]) -> Iterator[bytes]:
        return observed(events, lambda chunk: self._observer.stream_bytes(len(chunk)))

    def _after(self, run: StreamRun, request: LLMRequest, origin: str) -> Iterator[bytes]:
        """A JSON call's outcome, as a stream."""
        try:
            value = run.wait(request.timeout)
        except gevent.Timeout:
            yield error_event(GatewayTimeoutError(), origin)
            return
        except APIError as exc:
            yield error_event(exc, origin)
            return
        yield replay(value, request.mode)

    def _cancel(self, run: StreamRun) -> None:
        """Nobody follows `run` any more: stop its upstream stream (closing the connection),
        unless followers in other processes still read it (the producer checks again later)."""
        if run.shared and self.shared_streams is not None and self.shared_streams.followers(run.key) > 0:
            run.orphaned = True  # the producer stops once those have gone too
            gevent.spawn(self._reap_orphan, run)  # ends when a caller here joins again
            return
        self.forget(run)  # a newcomer starts afresh, never joins a dying stream
        if run.producer is not None and not run.done:
            run.producer.kill(block=False)

    def _reap_orphan(self, run: StreamRun) -> None:
        """Stop an orphaned run's producer once its last follower elsewhere has gone, even while
        the model sends nothing (the producer itself checks only when a piece arrives)."""
        shared = self.shared_streams
        assert shared is not None
        while not run.done and run.orphaned and run.followers == 0:
            gevent.sleep(ORPHAN_POLL)
            if run.followers == 0 and not shared.followers(run.key):
                self.forget(run)
                if run.producer is not None and not run.done:
                    run.producer.kill(block=False)
                return

    def forget(self, run: StreamRun) -> None:
        self.calls.forget(run)

    def produce(self, job: StreamJob, run: StreamRun, lock: Lease | None = None) -> None:
        """Stream the answer from the upstream into `run` (and, holding `lock`, into the key's
        channel for followers in other processes); store it; end the run and the channel."""
        key, request, origin = run.key, job.request, job.origin
        provider = self.upstream.provider
        shared = self.shared_streams if lock is not None else None
        if shared is not None and lock is not None:
            run.shared = True
            run.tee = Tee(shared, key, lock, run)
            shared.keep(lock)  # until shared.end below
        production = _Production(run, request, time.perf_counter(), time.monotonic() + request.timeout, shared)
        outcome = "failed"
        failure: APIError | None = None  # told to JSON followers elsewhere with the end marker
        shared_value: CachedValue | None = None
        self._observer.stream_started(provider.name, provider.model)
        try:
            with (
                gevent.Timeout(request.timeout + 1, GatewayTimeoutError()),  # a backstop: the caller times out first
                self._tracer.span(f"stream {provider.model}", {"prompt_builder.mode": request.mode}) as span,
            ):
                production.span = span
                if job.draft_model:
                    _, draft = self._stage(production, "draft", job.draft_model)
                    run.append(sse_event("draft", {"draft": draft, "status": "complete"}))
                result, text = self._stage(production, "refined", None)
                value = answer_value(job.parse(text), provider.name, result, request.ttl)
                usage = (result.input_tokens, result.output_tokens)
                run.append(sse_event("refined", refined(text, request.mode, provider.name, result.model, usage)))
                run.append(DONE)
                if job.store:
                    self._store_l1(key, value, new=True)
                    shared_value = value  # into L2 below, once our callers are done
                run.result.set(value)
                outcome = "completed"
        except gevent.GreenletExit:
            outcome = "cancelled"  # nobody follows: the upstream connection is closed on the way out
            run.result.set_exception(ServiceUnavailableError("The identical stream was cancelled"))
            raise
        except APIError as exc:
            failure = exc
            run.append(error_event(exc, origin))
            run.result.set_exception(exc)
        except Exception:
            log.exception("stream failed", extra={"request_id": origin})
            failure = APIError()
            run.append(error_event(failure, origin))
            run.result.set_exception(failure)
        finally:
            run.tee = None
            run.finish()  # our own callers first: they need nothing more from Redis
            self.forget(run)
            if shared_value is not None and self.l2 is not None:
                # Before the end marker: a follower elsewhere reads the answer from L2 at the end.
                self.l2.set(key, shared_value, even_paused=True)
            if shared is not None and lock is not None:
                shared.end(key, lock, ok=outcome == "completed", error=failure)
            self._observer.stream_finished(
                provider.name, provider.model, outcome, time.perf_counter() - production.begun
            )

    def _stage(self, production: _Production, name: str, model: str | None) -> tuple[ProviderResult, str]:
        """Stream one stage (the draft, or the refined answer) into the run as `<name>_delta`
        events; return the upstream's result and the stage's whole text."""
        run, request, provider = production.run, production.request, self.upstream.provider
        pieces: list[str] = []
        result: ProviderResult | None = None
        asked = time.perf_counter()
        for item in self.upstream.stream(request, model=model, deadline=production.deadline):
            if isinstance(item, ProviderResult):
                result = item
                continue
            pieces.append(item)
            run.append(sse_event(f"{name}_delta", {"delta": item}))
            if production.first is None:
                production.first = time.perf_counter()
                # Let the followers send the first delta now, before this greenlet records it
                # and parses whatever else the upstream already sent (less time to first token).
                gevent.sleep(0)
                if production.span is not None:
                    production.span.add_event("first_token")
                total_ttft = production.first - production.begun
                self._observer.stream_first_delta(
                    provider.name, provider.model, total_ttft, max(0.0, total_ttft - (production.first - asked))
                )
            shared = production.shared
            if run.orphaned and run.followers == 0 and shared is not None and not shared.followers(run.key):
                raise gevent.GreenletExit  # the last follower elsewhere has gone too
        assert result is not None  # providers end every stream with their result
        return result, "".join(pieces)

    def _follow(self, job: StreamJob, run: StreamRun) -> None:
        assert self._following is not None  # followers elsewhere are found through shared streams only
        self._following.follow(job, run)
