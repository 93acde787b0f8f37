"""Gateway: cache semantics (HIT/MISS/COALESCED/STALE, no-cache, no-store) and own answers."""

from __future__ import annotations

import time
from typing import Any

import gevent
import pytest
from gevent.event import Event

from app.cache import CachedValue, MemoryCache
from app.errors import CircuitOpenError, UpstreamError
from app.gateway import Core, Gateway, NotCached
from app.gateway.breaker import Breaker
from app.gateway.observer import NullObserver
from app.gateway.streams import InFlight
from app.gateway.upstream import UpstreamCaller
from app.providers.base import LLMRequest, ProviderResult, UpstreamFailure
from app.services.answers import text_answer


class EchoProvider:
    """A provider for tests: answers with the user message, counts calls, fails on demand."""

    name = "echo"
    model = "echo-1"

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay
        self.fail_with: UpstreamFailure | None = None
        self.gate: Event | None = None  # when set, calls wait here until it opens

    def complete(self, request: LLMRequest, timeout: float) -> ProviderResult:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait()
        if self.delay:
            gevent.sleep(self.delay)
        if self.fail_with is not None:
            raise self.fail_with
        return ProviderResult(f"answer to {request.messages[-1][1]}", 10, 5, self.model)

    def close(self) -> None:
        pass


class Waiting:
    """Counts followers waiting in InFlight (its on_wait hook)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, delta: int) -> None:
        self.count += delta


def _gateway(
    provider: EchoProvider, *, stale_seconds: float = 0, fail_max: int = 100, waiting: Waiting | None = None
) -> Gateway:
    breaker = Breaker("echo", fail_max, 30)
    upstream = UpstreamCaller(provider, breaker, NullObserver(), max_retries=0)
    return Gateway(Core(upstream, l1=MemoryCache(10**7, 100, stale_seconds), inflight=InFlight(on_wait=waiting)))


def _burst(gateway: Gateway, provider: EchoProvider, waiting: Waiting, n: int) -> list[gevent.Greenlet]:
    """n identical calls at once; the provider answers only when n - 1 followers wait."""
    provider.gate = Event()
    jobs = [gevent.spawn(gateway.complete, _request("a"), text_answer) for _ in range(n)]
    deadline = time.monotonic() + 30
    while waiting.count < n - 1:
        assert time.monotonic() < deadline, f"{waiting.count} of {n - 1} followers waited"
        gevent.sleep(0.001)
    provider.gate.set()
    gevent.joinall(jobs)
    return jobs


def _request(prompt: str, ttl: int = 3600) -> LLMRequest:
    return LLMRequest("optimize", "code", "system", (("user", prompt),), 100, ttl=ttl, timeout=5)


def test_miss_then_hit_without_a_second_call() -> None:
    provider = EchoProvider()
    gateway = _gateway(provider)
    first = gateway.complete(_request("a"), text_answer)
    second = gateway.complete(_request("a"), text_answer)
    assert (first.cache_status, second.cache_status) == ("MISS", "HIT")
    assert first.payload == second.payload == "answer to a"
    assert (second.input_tokens, second.output_tokens) == (10, 5)
    assert provider.calls == 1


def test_prompts_sharing_a_long_prefix_get_their_own_answers() -> None:
    provider = EchoProvider()
    gateway = _gateway(provider)
    prefix = "same beginning " * 1000
    a = gateway.complete(_request(prefix + "ending A"), text_answer)
    b = gateway.complete(_request(prefix + "ending B"), text_answer)
    assert a.payload.endswith("ending A") and b.payload.endswith("ending B")
    assert provider.calls == 2


def test_no_cache_skips_the_read_but_stores() -> None:
    provider = EchoProvider()
    gateway = _gateway(provider)
    gateway.complete(_request("a"), text_answer)
    refreshed = gateway.complete(_request("a"), text_answer, read=False)
    assert refreshed.cache_status == "MISS" and provider.calls == 2
    assert gateway.complete(_request("a"), text_answer).cache_status == "HIT"
    assert gateway.l1 is not None and len(gateway.l1) == 1  # the refreshed answer replaced the first


def test_no_store_neither_reads_nor_writes_nor_coalesces() -> None:
    provider = EchoProvider(delay=0.05)
    gateway = _gateway(provider)
    jobs = [gevent.spawn(gateway.complete, _request("a"), text_answer, read=False, write=False) for _ in range(5)]
    gevent.joinall(jobs, raise_error=True)
    assert provider.calls == 5
    assert {job.value.cache_status for job in jobs} == {"MISS"}
    assert gateway.l1 is not None and len(gateway.l1) == 0


def test_concurrent_identical_requests_coalesce() -> None:
    provider, waiting = EchoProvider(), Waiting()
    gateway = _gateway(provider, waiting=waiting)
    jobs = _burst(gateway, provider, waiting, 50)
    statuses = [job.value.cache_status for job in jobs]
    assert provider.calls == 1
    assert statuses.count("MISS") == 1 and statuses.count("COALESCED") == 49


def test_coalesced_followers_get_the_same_error() -> None:
    provider, waiting = EchoProvider(), Waiting()
    provider.fail_with = UpstreamFailure("status", "overloaded", status=529)
    gateway = _gateway(provider, waiting=waiting)
    jobs = _burst(gateway, provider, waiting, 10)
    assert provider.calls == 1
    assert all(isinstance(job.exception, UpstreamError) for job in jobs)


def test_stale_answer_is_served_when_the_upstream_fails() -> None:
    provider = EchoProvider()
    gateway = _gateway(provider, stale_seconds=600)
    gateway.complete(_request("a", ttl=1), text_answer)
    key = gateway.key_for(_request("a"))
    assert gateway.l1 is not None
    entry = gateway.l1.get(key)
    assert entry is not None
    now = time.time()
    gateway.l1.set(key, CachedValue(entry.data, stored_at=now - 100, fresh_until=now - 50))
    provider.fail_with = UpstreamFailure("status", "down", status=500)
    stale = gateway.complete(_request("a"), text_answer)
    assert stale.cache_status == "STALE"
    assert stale.age >= 100
    assert stale.payload == "answer to a"


def test_without_a_stale_entry_the_error_surfaces() -> None:
    provider = EchoProvider()
    provider.fail_with = UpstreamFailure("status", "down", status=500)
    with pytest.raises(UpstreamError):
        _gateway(provider).complete(_request("a"), text_answer)


def test_open_breaker_answers_without_calling() -> None:
    provider = EchoProvider()
    provider.fail_with = UpstreamFailure("connection", "refused")
    gateway = _gateway(provider, fail_max=2)
    for prompt in ("a", "b"):
        with pytest.raises(UpstreamError):
            gateway.complete(_request(prompt), text_answer)
    with pytest.raises(CircuitOpenError) as info:
        gateway.complete(_request("c"), text_answer)
    assert provider.calls == 2
    assert info.value.retry_after is not None and info.value.retry_after > 0


def test_the_breaker_counts_one_failure_per_request_not_per_attempt() -> None:
    """Three attempts of one caller request (two retries) are one failure: two such requests
    leave a breaker of fail_max 3 closed; the third request opens it."""
    provider = EchoProvider()
    provider.fail_with = UpstreamFailure("status", "overloaded", status=529)
    breaker = Breaker("echo", 3, 30)
    upstream = UpstreamCaller(provider, breaker, NullObserver(), max_retries=2, sleep=lambda _: None)
    gateway = Gateway(Core(upstream, l1=MemoryCache(10**7, 100, 0)))
    for n, prompt in enumerate(("a", "b"), start=1):
        with pytest.raises(UpstreamError):
            gateway.complete(_request(prompt), text_answer)
        assert (provider.calls, breaker.failures, breaker.state) == (3 * n, n, "closed")
    with pytest.raises(UpstreamError):
        gateway.complete(_request("c"), text_answer)
    assert breaker.state == "open"
    provider.fail_with = None
    with pytest.raises(CircuitOpenError):
        gateway.complete(_request("d"), text_answer)
    assert provider.calls == 9


def test_a_request_that_succeeds_on_a_retry_counts_as_a_success() -> None:
    provider = EchoProvider()
    breaker = Breaker("echo", 2, 30)
    failures = [UpstreamFailure("status", "overloaded", status=529)]

    def flaky(request: LLMRequest, timeout: float) -> ProviderResult:
        provider.calls += 1
        if failures:
            raise failures.pop()
        return ProviderResult("fine", 1, 1, provider.model)

    provider.complete = flaky  # type: ignore[method-assign]
    upstream = UpstreamCaller(provider, breaker, NullObserver(), max_retries=2, sleep=lambda _: None)
    assert upstream.call(_request("a")).text == "fine"
    assert (provider.calls, breaker.failures, breaker.state) == (2, 0, "closed")


@pytest.mark.parametrize(
    ("tiers", "spans_of_the_hit", "tier"),
    [
        ("l1", [], "l1"),  # an L1 read: no span of its own
        ("l2", ["cache.lookup"], "disk"),  # a read that leaves the process has one
    ],
)
def test_a_lookup_tells_the_span_in_hand_and_only_an_l2_read_has_its_own(
    tmp_path: Any, tiers: str, spans_of_the_hit: list[str], tier: str
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from app.cache.disk import DiskCache
    from app.observability.tracing import OTelTracer

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    disk = DiskCache(str(tmp_path), 10**7, 60)
    upstream = UpstreamCaller(EchoProvider(), Breaker("echo", 5, 30), NullObserver(), max_retries=0)

    def gateway_on_disk() -> Gateway:
        return Gateway(
            Core(upstream, l1=MemoryCache(10**7, 100), l2=disk, inflight=InFlight(), tracer=OTelTracer(tracer))
        )

    gateway = gateway_on_disk()
    gateway.complete(_request("a"), text_answer)
    if tiers == "l2":
        gateway = gateway_on_disk()  # another process's gateway: the answer is on disk only
    exporter.clear()
    with tracer.start_as_current_span("POST /api/optimize"):
        assert gateway.complete(_request("a"), text_answer).cache_status == "HIT"
    *children, request = exporter.get_finished_spans()
    assert [span.name for span in children] == spans_of_the_hit
    assert (request.attributes or {})["cache.status"] == "hit"
    assert (request.attributes or {})["cache.tier"] == tier
    disk.close()


class Lookups(NullObserver):
    """Counts the cache lookups the gateway reports, by status."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def cache_lookup(self, namespace: str, status: str, seconds: float = 0.0, tier: str = "l1") -> None:
        self.seen.append(status)


@pytest.mark.parametrize("how", [{"cached_only": True}, {"peek": True}])
def test_a_cached_only_ask_counts_a_lookup_only_when_it_answers(how: dict[str, bool]) -> None:
    """A job's submission and a GraphQL operation first ask for a cached answer only; when there is
    none the caller asks again (the job runs, the operation's greenlet), and only that ask counts:
    one miss per request, not two."""
    provider, lookups = EchoProvider(), Lookups()
    upstream = UpstreamCaller(provider, Breaker("echo", 100, 30), lookups, max_retries=0)
    gateway = Gateway(Core(upstream, l1=MemoryCache(10**7, 100, 0), observer=lookups, inflight=InFlight()))
    with pytest.raises(NotCached):
        gateway.complete(_request("only cached"), text_answer, **how)
    assert lookups.seen == [] and provider.calls == 0
    assert gateway.complete(_request("only cached"), text_answer).cache_status == "MISS"
    assert gateway.complete(_request("only cached"), text_answer, **how).cache_status == "HIT"
    assert lookups.seen == ["MISS", "HIT"] and provider.calls == 1
