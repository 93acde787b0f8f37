"""Gateway.complete: key → L1 → L2 → coalesce → breaker + retries → provider → store."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gevent
import redis
from redis.lock import Lock

from app.cache import CachedValue, MemoryCache, RedisCache
from app.coalescing import InFlight, SharedStreams
from app.coalescing.redis_streams import UNREACHABLE
from app.errors import APIError, GatewayTimeoutError, ServiceUnavailableError, UpstreamError
from app.gateway.keys import request_key
from app.gateway.observer import NullObserver, Observer
from app.gateway.streams import StreamRun, sse_event
from app.gateway.tracer import NullTracer, Tracer
from app.gateway.upstream import UpstreamCaller
from app.providers.base import LLMRequest, ProviderResult

__all__ = ["Completion", "Gateway", "Stream"]

log = logging.getLogger(__name__)

# Seconds of silence after which a stream's caller gets an SSE comment: keeps proxies from timing
# out, and a caller who left is noticed within a beat or two, so an unfollowed stream stops soon.
HEARTBEAT_SECONDS = 0.25
DONE = sse_event("done", {"status": "finished"})

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


@dataclass(frozen=True)
class _StreamJob:
    """What a stream's producer needs besides its run: the request and how to answer it."""

    request: LLMRequest
    parse: Callable[[str], Any]
    store: bool
    draft_model: str | None
    origin: str  # the request id that started the stream, for its error event


@dataclass(frozen=True)
class Stream:
    """A stream as one caller gets it: where it came from, and its event bytes."""

    cache_status: str  # HIT | MISS | COALESCED
    events: Iterator[bytes]


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
        shared_streams: SharedStreams | None = None,
        observer: Observer | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.upstream = upstream
        self.l1 = l1
        self.l2 = l2
        self.inflight = inflight
        self.shared_streams = shared_streams
        self._observer = observer or NullObserver()
        self._tracer = tracer or NullTracer()
        self._streams: dict[str, StreamRun] = {}  # streams in flight in this worker, by key
        self._buffered = 0  # bytes held by the buffers of streams in flight, counted against L1

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
        stale, fresh = self._read(key, request, read and write)
        if stale is not None and fresh:
            return _completion(stale, "HIT", time.time())

        run = self._streams.get(key) if write else None
        if run is not None:  # the same answer is being streamed: wait for it
            self._observer.coalesced(request.task, "worker")
            value = self._wait_stream(run, request.timeout)
            return _completion(value, "COALESCED", time.time())

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

    def _read(self, key: str, request: LLMRequest, read: bool) -> tuple[CachedValue | None, bool]:
        """Look `key` up in L1 then L2 when `read` (else count a bypass); return (value, fresh)."""
        if not read:
            self._observer.cache_lookup(request.task, "BYPASS")
            return None, False
        started = time.perf_counter()
        with self._tracer.span("cache.lookup", {"cache.namespace": request.task}) as span:
            cached = self._lookup(key)
            fresh = cached is not None and cached.is_fresh(time.time())
            status = "MISS" if cached is None else "HIT" if fresh else "STALE"
            span.set_attribute("cache.status", status.lower())
        self._observer.cache_lookup(request.task, "HIT" if fresh else "MISS", time.perf_counter() - started)
        return cached, fresh

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
        shared = self.shared_streams
        if shared is None:
            return produce(), "MISS"
        value, remote = shared.run(key, produce, request.timeout, lambda: self.l2.get(key) if self.l2 else None)
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

    # --- streams -----------------------------------------------------------------------------------

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
        cached, fresh = self._read(key, request, read and write)
        if cached is not None and fresh:
            return Stream("HIT", self._counted(iter([_replay(cached, request.mode)])))
        if write:
            run = self._streams.get(key)
            if run is not None:
                self._observer.coalesced(request.task, "worker")
                self._observer.stream_follower("worker")
                return Stream("COALESCED", self._counted(run.follow(HEARTBEAT_SECONDS)))
            pending = self.inflight.pending(key) if self.inflight is not None else None
            if pending is not None:  # the same answer is being made for a JSON caller
                self._observer.coalesced(request.task, "worker")
                self._observer.stream_follower("worker")
                return Stream("COALESCED", self._counted(self._after(pending, request, origin)))
        refused = self.upstream.breaker.refusal()
        if refused is not None:  # known before any header is sent: no stream to start
            if cached is None:
                raise refused  # 503 JSON with Retry-After, as /api/optimize answers
            self._observer.cache_lookup(request.task, "STALE")
            return Stream("STALE", self._counted(iter([_replay(cached, request.mode)])))
        job = _StreamJob(request, parse, write, draft_model, origin)
        run = StreamRun(key, on_idle=self._cancel, on_size=self._buffer_changed)
        if write:
            self._streams[key] = run
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
                    run.producer = gevent.spawn(self._tracer.carry(self._follow_stream), job, run)
                    return Stream("COALESCED", self._counted(run.follow(HEARTBEAT_SECONDS)))
        run.producer = gevent.spawn(self._tracer.carry(self._produce_stream), job, run, lock)
        # Let the producer send its upstream request now, while this request's response hooks
        # run: the upstream's wait then overlaps our own work (measured: ~0.5 ms off TTFT).
        gevent.sleep(0)
        return Stream("MISS", self._counted(run.follow(HEARTBEAT_SECONDS)))

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
        try:
            for chunk in events:
                self._observer.stream_bytes(len(chunk))
                yield chunk
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()

    def _after(self, pending: Any, request: LLMRequest, origin: str) -> Iterator[bytes]:
        """A JSON call's outcome, as a stream."""
        try:
            value, _ = pending.get(timeout=request.timeout)
        except gevent.Timeout:
            yield _error_event(GatewayTimeoutError(), origin)
            return
        except APIError as exc:
            yield _error_event(exc, origin)
            return
        yield _replay(value, request.mode)

    def _wait_stream(self, run: StreamRun, timeout: float) -> CachedValue:
        try:
            value: CachedValue = run.wait(timeout)
        except gevent.Timeout:
            raise GatewayTimeoutError("Timed out waiting for an identical stream in flight") from None
        return value

    def _cancel(self, run: StreamRun) -> None:
        """Nobody follows `run` any more: stop its upstream stream (closing the connection),
        unless followers in other processes still read it (the producer checks again later)."""
        if run.shared and self.shared_streams is not None and self.shared_streams.followers(run.key) > 0:
            run.orphaned = True  # the producer stops once those have gone too
            return
        self._forget(run)  # a newcomer starts afresh, never joins a dying stream
        if run.producer is not None and not run.done:
            run.producer.kill(block=False)

    def _forget(self, run: StreamRun) -> None:
        if self._streams.get(run.key) is run:
            del self._streams[run.key]

    def _produce_stream(self, job: _StreamJob, run: StreamRun, lock: Lock | None = None) -> None:
        key, request, origin = run.key, job.request, job.origin
        provider = self.upstream.provider
        shared = self.shared_streams if lock is not None else None
        heartbeat = None
        if shared is not None and lock is not None:
            run.shared = True

            def tee(event: bytes) -> None:
                if not shared.publish(key, lock, event):
                    # Followers elsewhere may miss this event: publish nothing more. They finish
                    # from the answer in L2 (stored before the end marker), or end with an error
                    # event when it is not there — never with a text that has a hole.
                    run.tee = None

            run.tee = tee
            heartbeat = shared.keep(lock)
        begun = time.perf_counter()
        deadline = time.monotonic() + request.timeout  # the whole stream, draft stage included
        first: list[float] = []
        outcome = "failed"
        failure: APIError | None = None  # told to JSON followers elsewhere with the end marker
        shared_value: CachedValue | None = None
        self._observer.stream_started(provider.name, provider.model)

        def stage(name: str, model: str | None) -> tuple[ProviderResult, str]:
            pieces: list[str] = []
            result: ProviderResult | None = None
            asked = time.perf_counter()
            for item in self.upstream.stream(request, model=model, deadline=deadline):
                if isinstance(item, ProviderResult):
                    result = item
                    continue
                pieces.append(item)
                run.append(sse_event(f"{name}_delta", {"delta": item}))
                if not first:
                    first.append(time.perf_counter())
                    # Let the followers send the first delta now, before this greenlet records
                    # it and parses whatever else the upstream already sent (~0.4 ms off TTFT).
                    gevent.sleep(0)
                    span.add_event("first_token")
                    total_ttft = first[0] - begun
                    self._observer.stream_first_delta(
                        provider.name, provider.model, total_ttft, max(0.0, total_ttft - (first[0] - asked))
                    )
                if run.orphaned and run.followers == 0 and shared is not None and not shared.followers(key):
                    raise gevent.GreenletExit  # the last follower elsewhere has gone too
            assert result is not None  # providers end every stream with their result
            return result, "".join(pieces)

        try:
            with (
                gevent.Timeout(request.timeout + 1, GatewayTimeoutError()),  # a backstop: the caller times out first
                self._tracer.span(f"stream {provider.model}", {"prompt_builder.mode": request.mode}) as span,
            ):
                if job.draft_model:
                    _, draft = stage("draft", job.draft_model)
                    run.append(sse_event("draft", {"draft": draft, "status": "complete"}))
                result, text = stage("refined", None)
                payload = job.parse(text)
                now = time.time()
                usage = (result.input_tokens, result.output_tokens)
                value = CachedValue(
                    _encode(payload, provider.name, result.model, usage), stored_at=now, fresh_until=now + request.ttl
                )
                run.append(sse_event("refined", _refined(text, request.mode, provider.name, result.model, usage)))
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
            run.append(_error_event(exc, origin))
            run.result.set_exception(exc)
        except Exception:
            log.exception("stream failed", extra={"request_id": origin})
            failure = APIError()
            run.append(_error_event(failure, origin))
            run.result.set_exception(failure)
        finally:
            if heartbeat is not None:
                heartbeat.kill(block=False)
            run.tee = None
            run.finish()  # our own callers first: they need nothing more from Redis
            self._forget(run)
            if shared_value is not None and self.l2 is not None:
                # Before the end marker: a follower elsewhere reads the answer from L2 at the end.
                self.l2.set(key, shared_value, even_paused=True)
            if shared is not None and lock is not None:
                shared.end(key, lock, ok=outcome == "completed", error=failure)
            self._observer.stream_finished(provider.name, provider.model, outcome, time.perf_counter() - begun)

    def _follow_stream(self, job: _StreamJob, run: StreamRun) -> None:
        """Relay another process's stream of the run's key into `run`; lead it ourselves when
        that stream has just ended without an answer to show."""
        assert self.shared_streams is not None
        key, request, origin = run.key, job.request, job.origin
        deadline = time.monotonic() + request.timeout
        handed_over = False

        def lost(reason: str) -> bytes:
            return _error_event(ServiceUnavailableError(reason), origin)

        try:
            for _ in range(3):
                ended = self.shared_streams.relay(key, run.append, deadline, lost)
                if ended == UNREACHABLE:
                    if not run.events:  # our callers have nothing yet: stream it ourselves
                        handed_over = True
                        self._produce_stream(job, run)
                        return
                    run.append(lost("Lost the identical stream in another process (Redis unavailable)"))
                    run.result.set_exception(ServiceUnavailableError("The identical stream was lost"))
                    return
                cached = self.l2.get(key) if self.l2 is not None and ended is not False else None
                if ended is None and cached is None:  # between two streams: try to lead the next
                    try:
                        lock = self.shared_streams.claim(key)
                    except redis.RedisError:
                        lock = None
                    if lock is not None:
                        handed_over = True
                        self._produce_stream(job, run, lock)
                        return
                    continue
                if ended is None and cached is not None:
                    run.append(_replay(cached, request.mode))
                elif ended is True and not (run.events and run.events[-1].endswith(DONE)):
                    # The leader finished, but stopped publishing on the way (Redis failed it).
                    rest = _rest(run.events, cached, request.mode) if cached is not None else None
                    if rest is None and not run.events:  # our callers have nothing yet: stream it ourselves
                        handed_over = True
                        self._produce_stream(job, run)
                        return
                    if rest is None:
                        run.append(lost("Lost part of the identical stream in another process"))
                        cached = None
                    else:
                        run.append(rest)
                if cached is not None:
                    self._store_l1(key, cached)
                    run.result.set(cached)
                else:
                    run.result.set_exception(ServiceUnavailableError("The identical stream failed"))
                return
            run.append(lost("Could not follow the identical stream in another process"))
            run.result.set_exception(ServiceUnavailableError("The identical stream could not be followed"))
        except gevent.GreenletExit:
            run.result.set_exception(ServiceUnavailableError("The identical stream was cancelled"))
            raise
        finally:
            if not handed_over:
                run.finish()
                self._forget(run)


def _refined(text: str, mode: str, provider: str, model: str, usage: tuple[int, int]) -> dict[str, Any]:
    return {
        "refined": text,
        "status": "complete",
        "metadata": {
            "mode": mode,
            "provider": provider,
            "model": model,
            "usage": {"inputTokens": usage[0], "outputTokens": usage[1]},
        },
    }


def _replay(value: CachedValue, mode: str) -> bytes:
    """A stored answer as the events a live stream of it sends: its text in pieces of about a
    line (deltas), then refined and done, in one write."""
    text, data = _stored_text(value)
    pieces = re.findall(r"[^\n]*\n|[^\n]+$", text)
    return b"".join([sse_event("refined_delta", {"delta": piece}) for piece in pieces] + _ending(text, mode, data))


def _rest(sent: list[bytes], value: CachedValue, mode: str) -> bytes | None:
    """The events that finish a stream of `value` whose first events were `sent` (a prefix of
    its text in refined deltas, maybe a draft stage before them); None when `sent` does not
    begin that text."""
    names: list[bytes] = []
    written: list[str] = []
    for block in b"".join(sent).split(b"\n\n"):
        name, _, data = block.removeprefix(b"event: ").partition(b"\ndata: ")
        names.append(name)
        if name == b"refined_delta":
            written.append(json.loads(data)["delta"])
    if b"refined" in names:
        return DONE
    text, stored = _stored_text(value)
    begun = "".join(written)
    if not text.startswith(begun):
        return None
    rest = [sse_event("refined_delta", {"delta": text[len(begun) :]})] if len(text) > len(begun) else []
    return b"".join(rest + _ending(text, mode, stored))


def _stored_text(value: CachedValue) -> tuple[str, dict[str, Any]]:
    """A stored answer's text (as its stream wrote it) and its stored fields."""
    data = json.loads(value.data)
    text = data["p"] if isinstance(data["p"], str) else json.dumps(data["p"], ensure_ascii=False)
    return text, data


def _ending(text: str, mode: str, data: dict[str, Any]) -> list[bytes]:
    return [sse_event("refined", _refined(text, mode, data["v"], data["m"], tuple(data["u"]))), DONE]


def _error_event(exc: APIError, origin: str) -> bytes:
    return sse_event("error", {"error": exc.message, "details": exc.details, "status": "failed", "requestId": origin})
