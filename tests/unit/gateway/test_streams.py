"""Gateway streams in one process: events, the cache shared with complete(), followers of one
stream, JSON and stream callers joining each other, faults, deadlines, cancellation, the draft
stage. (Sharing through Redis needs a gevent-patched process: tests/integration/test_streaming.py.)"""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Iterator

import gevent
import pytest
from gevent.event import Event

from app.cache import CachedValue, MemoryCache, RedisHealth
from app.errors import CircuitOpenError
from app.gateway import Core, Gateway
from app.gateway.breaker import Breaker
from app.gateway.observer import NullObserver
from app.gateway.replay import DONE
from app.gateway.replay import rest as _rest
from app.gateway.streaming import HEARTBEAT_SECONDS
from app.gateway.streams import HEARTBEAT, InFlight, sse_event
from app.gateway.upstream import UpstreamCaller
from app.providers.base import LLMRequest, ProviderResult, UpstreamFailure
from app.services.answers import text_answer


class StreamingProvider:
    """Streams "piece 0 piece 1 ..." for the user message; gates, faults and closes on demand."""

    name = "echo"
    model = "echo-1"

    def __init__(self, pieces: int = 4) -> None:
        self.pieces = pieces
        self.calls = 0
        self.closed = 0
        self.models: list[str] = []
        self.gate: Event | None = None  # the first piece waits here
        self.fail_after: int | None = None
        self.stall_after: int | None = None

    def complete(self, request: LLMRequest, timeout: float) -> ProviderResult:
        *_, result = self.stream(request, timeout)
        assert isinstance(result, ProviderResult)
        return result

    def stream(
        self, request: LLMRequest, timeout: float, model: str | None = None
    ) -> Generator[str | ProviderResult, None, None]:
        self.calls += 1
        self.models.append(model or self.model)
        try:
            if self.gate is not None:
                self.gate.wait()
            text = [f"{request.messages[-1][1]} piece {i}\n" for i in range(self.pieces)]
            for i, piece in enumerate(text):
                if i == self.fail_after:
                    raise UpstreamFailure("status", "overloaded", status=529)
                if i == self.stall_after:
                    gevent.sleep(60)
                yield piece
                gevent.sleep(0.001)
            yield ProviderResult("".join(text), 10, 5, model or self.model)
        finally:
            self.closed += 1

    def close(self) -> None:
        pass


def _gateway(provider: StreamingProvider, **shared: object) -> Gateway:
    upstream = UpstreamCaller(provider, Breaker("echo", 100, 30), NullObserver(), max_retries=0)
    return Gateway(Core(upstream, l1=MemoryCache(10**7, 100, 0), inflight=InFlight(), **shared))  # type: ignore[arg-type]


def _request(prompt: str = "hello", timeout: float = 5) -> LLMRequest:
    return LLMRequest("optimize", "code", "system", (("user", prompt),), 100, timeout=timeout)


def _read(events: Iterator[bytes]) -> tuple[bytes, list[tuple[str, dict]]]:
    raw = b"".join(chunk for chunk in events if chunk != HEARTBEAT)
    parsed = []
    for block in raw.decode().split("\n\n"):
        if block:
            name, data = block.split("\n", 1)
            parsed.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return raw, parsed


def _text(events: list[tuple[str, dict]]) -> str:
    deltas = "".join(d["delta"] for n, d in events if n == "refined_delta")
    assert [n for n, _ in events][-2:] == ["refined", "done"] and events[-2][1]["refined"] == deltas
    return deltas


def test_a_miss_streams_then_both_paths_hit_the_cache() -> None:
    provider = StreamingProvider()
    gateway = _gateway(provider)
    stream = gateway.stream(_request(), text_answer)
    assert stream.cache_status == "MISS"
    _, events = _read(stream.events)
    assert _text(events) == "hello piece 0\nhello piece 1\nhello piece 2\nhello piece 3\n"
    assert events[-2][1]["metadata"] == {
        "mode": "code",
        "provider": "echo",
        "model": "echo-1",
        "usage": {"inputTokens": 10, "outputTokens": 5},
    }
    completion = gateway.complete(_request(), text_answer)
    assert completion.cache_status == "HIT" and completion.payload == _text(events).strip()
    replay = gateway.stream(_request(), text_answer)
    assert replay.cache_status == "HIT" and _text(_read(replay.events)[1]) == completion.payload
    assert provider.calls == 1


def test_followers_share_one_stream_and_get_the_same_bytes() -> None:
    provider = StreamingProvider()
    provider.gate = Event()
    gateway = _gateway(provider)
    streams = [gateway.stream(_request(), text_answer) for _ in range(5)]
    assert [s.cache_status for s in streams] == ["MISS"] + ["COALESCED"] * 4
    readers = [gevent.spawn(_read, s.events) for s in streams]
    gevent.sleep(0.01)
    provider.gate.set()
    gevent.joinall(readers, raise_error=True)
    assert len({reader.value[0] for reader in readers}) == 1
    assert provider.calls == 1


def test_a_json_call_joins_a_stream_and_a_stream_joins_a_json_call() -> None:
    provider = StreamingProvider()
    provider.gate = Event()
    gateway = _gateway(provider)
    stream = gateway.stream(_request("one"), text_answer)
    reader = gevent.spawn(_read, stream.events)
    as_json = gevent.spawn(gateway.complete, _request("one"), text_answer)
    gevent.sleep(0.01)
    provider.gate.set()
    assert as_json.get(timeout=5).cache_status == "COALESCED"
    assert as_json.value.payload == _text(reader.get(timeout=5)[1]).strip()

    provider.gate = Event()
    first = gevent.spawn(gateway.complete, _request("two"), text_answer)
    gevent.sleep(0.01)
    joined = gateway.stream(_request("two"), text_answer)
    assert joined.cache_status == "COALESCED"
    reader = gevent.spawn(_read, joined.events)
    provider.gate.set()
    assert _text(reader.get(timeout=5)[1]) == first.get(timeout=5).payload
    assert provider.calls == 2


def test_a_failure_mid_stream_is_an_error_event_and_nothing_is_stored() -> None:
    provider = StreamingProvider()
    provider.fail_after = 2
    gateway = _gateway(provider)
    _, events = _read(gateway.stream(_request(), text_answer, origin="req-1").events)
    assert [n for n, _ in events] == ["refined_delta", "refined_delta", "error"]
    assert events[-1][1]["status"] == "failed" and events[-1][1]["requestId"] == "req-1"
    assert gateway.l1 is not None and len(gateway.l1) == 0
    assert gateway.upstream.breaker.failures == 1


def test_a_stall_past_the_deadline_is_a_timeout_error_event() -> None:
    provider = StreamingProvider()
    provider.stall_after = 1
    gateway = _gateway(provider)
    started = time.monotonic()
    _, events = _read(gateway.stream(_request(timeout=0.3), text_answer).events)
    assert [n for n, _ in events] == ["refined_delta", "error"]
    assert "timed out" in events[-1][1]["error"] and time.monotonic() - started < 5
    assert provider.closed == 1


def test_a_stream_nobody_follows_is_cancelled_and_its_upstream_closed() -> None:
    provider = StreamingProvider(pieces=1000)
    gateway = _gateway(provider)
    events = gateway.stream(_request(), text_answer).events
    next(events)
    events.close()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while provider.closed == 0:
        assert time.monotonic() < deadline
        gevent.sleep(0.01)
    assert gateway.l1 is not None and len(gateway.l1) == 0
    assert gateway.stream(_request(), text_answer).cache_status == "MISS"  # a newcomer starts afresh


def test_heartbeats_while_the_upstream_is_silent() -> None:
    provider = StreamingProvider()
    provider.gate = Event()
    gateway = _gateway(provider)
    events = gateway.stream(_request(), text_answer).events
    assert next(events) == b""  # at once: the server sends the response headers on it
    assert next(events) == HEARTBEAT  # after HEARTBEAT_SECONDS of silence
    provider.gate.set()
    assert HEARTBEAT_SECONDS <= 0.25


def test_the_draft_stage_streams_first_with_the_draft_model() -> None:
    provider = StreamingProvider(pieces=2)
    gateway = _gateway(provider)
    _, events = _read(gateway.stream(_request(), text_answer, draft_model="fast-1").events)
    names = [n for n, _ in events]
    assert names == ["draft_delta", "draft_delta", "draft", "refined_delta", "refined_delta", "refined", "done"]
    assert provider.models == ["fast-1", "echo-1"]
    assert events[2][1]["draft"] == "hello piece 0\nhello piece 1\n"


def test_a_json_call_waiting_on_a_stream_times_out_with_504() -> None:
    from app.errors import GatewayTimeoutError

    provider = StreamingProvider()
    provider.gate = Event()
    gateway = _gateway(provider)
    reader = gevent.spawn(_read, gateway.stream(_request("slow"), text_answer).events)
    gevent.sleep(0.01)
    with pytest.raises(GatewayTimeoutError):
        gateway.complete(_request("slow", timeout=0.05), text_answer)
    provider.gate.set()
    assert _text(reader.get(timeout=5)[1])  # the stream itself goes on for its own caller


def test_buffers_in_flight_count_against_the_cache_bound_until_the_stream_ends() -> None:
    provider = StreamingProvider(pieces=4)
    provider.gate = Event()
    buffered: list[int] = []

    class Buffers(NullObserver):
        def stream_buffers(self, size: int) -> None:
            buffered.append(size)

    upstream = UpstreamCaller(provider, Breaker("echo", 100, 30), NullObserver(), max_retries=0)
    l1 = MemoryCache(10**7, 100, 0)
    gateway = Gateway(Core(upstream, l1=l1, inflight=InFlight(), observer=Buffers()))
    streams = [gateway.stream(_request(), text_answer) for _ in range(3)]
    readers = [gevent.spawn(_read, s.events) for s in streams]
    gevent.sleep(0.01)
    provider.gate.set()
    reserved_while_streaming: list[int] = []
    while not all(r.ready() for r in readers):
        reserved_while_streaming.append(l1.reserved)
        gevent.sleep(0.0005)
    raw = readers[0].value[0]
    assert max(buffered) == len(raw)  # one buffer for three callers: its bytes, not three times
    assert max(reserved_while_streaming) > 0
    assert l1.reserved == 0 and buffered[-1] == 0  # released when the stream ended
    assert gateway.complete(_request(), text_answer).cache_status == "HIT"  # stored beside it


def _stored(text: str) -> CachedValue:
    data = json.dumps({"p": text, "v": "echo", "m": "echo-1", "u": [3, 4]}).encode()
    return CachedValue(data, stored_at=time.time(), fresh_until=time.time() + 60)


def _deltas_and_refined(raw: bytes) -> tuple[str, str, bool]:
    deltas, refined, done = [], "", False
    for block in raw.split(b"\n\n"):
        name, _, data = block.removeprefix(b"event: ").partition(b"\ndata: ")
        if name == b"refined_delta":
            deltas.append(json.loads(data)["delta"])
        elif name == b"refined":
            refined = json.loads(data)["refined"]
        done = done or name == b"done"
    return "".join(deltas), refined, done


@pytest.mark.parametrize("sent_pieces", [0, 1, 2])
def test_a_relayed_stream_with_a_hole_is_finished_from_the_stored_answer(sent_pieces: int) -> None:
    """What a follower sent before the leader stopped publishing, plus `_rest`, is one whole
    stream: deltas joined equal the refined text, then done."""
    text = "first line\nsecond line\nthird"
    pieces = ["first line\n", "second line\n", "third"]
    sent = [sse_event("draft", {"draft": "d", "status": "complete"})]
    sent += [sse_event("refined_delta", {"delta": p}) for p in pieces[:sent_pieces]]
    rest = _rest(sent, _stored(text), "code")
    assert rest is not None
    deltas, refined, done = _deltas_and_refined(b"".join(sent) + rest)
    assert deltas == refined == text and done


def test_a_hole_after_the_refined_event_needs_only_done() -> None:
    text = "all of it"
    sent = [sse_event("refined_delta", {"delta": text}), sse_event("refined", {"refined": text})]
    assert _rest(sent, _stored(text), "code") == DONE


def test_a_stored_answer_that_does_not_continue_what_was_sent_is_not_used() -> None:
    sent = [sse_event("refined_delta", {"delta": "another text"})]
    assert _rest(sent, _stored("the stored text"), "code") is None


class _EndedElsewhere:
    """Redis's side of stream sharing as a follower sees it when another process led the key and
    ended it well, but none of its events reached Redis and its answer is not in L2 (both failed
    on the leader's side)."""

    def __init__(self) -> None:
        self.health = RedisHealth.for_timeout(1.0)  # available: nothing has failed
        self.relays = 0

    def claim(self, key: str) -> None:
        return None  # another process leads

    def relay(self, key: str, append: object, deadline: float, lost: object) -> bool:
        self.relays += 1
        return True  # ended well, with nothing to copy

    def followers(self, key: str) -> int:
        return 0


def test_a_follower_with_nothing_relayed_and_no_stored_answer_streams_on_its_own() -> None:
    """Its callers have been sent nothing yet: rather than an error event, they get the whole
    stream from this process's own upstream call."""
    provider = StreamingProvider()
    shared = _EndedElsewhere()
    stream = _gateway(provider, shared_streams=shared).stream(_request(), text_answer)
    assert stream.cache_status == "COALESCED"
    _, events = _read(stream.events)
    assert _text(events) == "".join(f"hello piece {i}\n" for i in range(4))
    assert (shared.relays, provider.calls) == (1, 1)


def test_an_open_breaker_refuses_a_new_stream_before_it_starts_and_serves_a_stale_answer() -> None:
    """The breaker's state is known before any header: a new stream is refused with the error
    /api/optimize raises (503 with Retry-After), not a 200 stream with an error event; an
    expired answer still in the cache is replayed instead, as STALE."""
    provider = StreamingProvider()
    provider.fail_after = 0
    upstream = UpstreamCaller(provider, Breaker("echo", 1, 30), NullObserver(), max_retries=0)
    gateway = Gateway(Core(upstream, l1=MemoryCache(10**7, 100, 600), inflight=InFlight()))
    _, events = _read(gateway.stream(_request("fails"), text_answer).events)
    assert events[-1][0] == "error" and gateway.upstream.breaker.state == "open"
    with pytest.raises(CircuitOpenError) as refused:
        gateway.stream(_request("new"), text_answer)
    assert refused.value.retry_after is not None and refused.value.retry_after > 0
    assert provider.calls == 1
    now = time.time()
    key = gateway.key_for(_request("old"))
    assert gateway.l1 is not None
    gateway.l1.set(key, CachedValue(_stored("old answer").data, stored_at=now - 100, fresh_until=now - 50))
    stale = gateway.stream(_request("old"), text_answer)
    assert stale.cache_status == "STALE" and _text(_read(stale.events)[1]).strip() == "old answer"
    assert provider.calls == 1
