"""Traces: an OTLP/HTTP receiver in the test gets the span tree for a miss, a hit and a coalesced
request, and the fake upstream sees the traceparent of the upstream HTTP span."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support import FakeUpstreamProcess, free_port, held_burst, start_server, wait_until

pytestmark = pytest.mark.integration


class Receiver:
    """A minimal OTLP/HTTP trace collector: decodes protobuf exports into flat span dicts."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                export = ExportTraceServiceRequest.FromString(body)
                with receiver.lock:
                    for resource in export.resource_spans:
                        for scope in resource.scope_spans:
                            for span in scope.spans:
                                receiver.spans.append(
                                    {
                                        "name": span.name,
                                        "kind": span.kind,
                                        "scope": scope.scope.name,
                                        "trace": span.trace_id.hex(),
                                        "id": span.span_id.hex(),
                                        "parent": span.parent_span_id.hex(),
                                        "attrs": {a.key: _value(a.value) for a in span.attributes},
                                        "events": [e.name for e in span.events],
                                    }
                                )
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, predicate: Any, timeout: float = 30) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]]:
            with self.lock:
                return [s for s in self.spans if predicate(s)]

        return wait_until(found, timeout=timeout, what="expected spans")

    def tree(self, trace_id: str, expect: Any = None) -> list[dict[str, Any]]:
        """The spans of one trace; with `expect`, wait until `expect(spans)` holds (spans of one
        trace may arrive in several exports)."""

        def spans() -> list[dict[str, Any]]:
            with self.lock:
                return [s for s in self.spans if s["trace"] == trace_id]

        if expect is None:
            return spans()
        return wait_until(lambda: (found := spans()) and expect(found) and found, timeout=30, what="span tree")


def _value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value"))


@pytest.fixture(scope="module")
def traced(_fake_upstream_process: FakeUpstreamProcess) -> Iterator[tuple[str, Receiver]]:
    receiver = Receiver()
    env = {
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "ANTHROPIC_BASE_URL": _fake_upstream_process.url,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_TRACES_SAMPLER": "always_on",
        "LLM_MODEL": "claude-test",
    }
    with start_server(env, workers=1) as server:
        yield server.url, receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def _server_span(receiver: Receiver, request_id: str) -> dict[str, Any]:
    return receiver.wait_for(lambda s: s["attrs"].get("http.request.header.x_request_id") == request_id)[0]


def _children(spans: list[dict[str, Any]], parent: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in spans if s["parent"] == parent["id"]]


def test_miss_hit_and_coalesced_span_trees(traced: tuple[str, Receiver], fake_upstream: FakeUpstreamProcess) -> None:
    url, receiver = traced
    body = {"prompt": "trace me", "mode": "code"}
    miss = requests.post(url + "/api/optimize", json=body, headers={"X-Request-ID": "trace-miss"}, timeout=10)
    hit = requests.post(url + "/api/optimize", json=body, headers={"X-Request-ID": "trace-hit"}, timeout=10)
    assert (miss.headers["X-Cache"], hit.headers["X-Cache"]) == ("MISS", "HIT")

    root = _server_span(receiver, "trace-miss")
    spans = receiver.tree(root["trace"], lambda found: sum(s["name"].startswith("POST") for s in found))
    names = {s["name"] for s in _children(spans, root)}
    assert "coalescing.wait" in names
    assert "cache.lookup" not in names  # an L1 read has no span of its own: its outcome is the request's
    assert root["attrs"]["cache.status"] == "miss"
    assert (root["kind"], root["name"], root["attrs"]["http.route"]) == (2, "POST /api/optimize", "/api/optimize")
    assert {"http.method", "http.scheme", "http.target", "net.peer.ip", "http.flavor"} <= root["attrs"].keys()
    wait = next(s for s in _children(spans, root) if s["name"] == "coalescing.wait")
    assert wait["attrs"]["coalescing.role"] == "leader"
    chat = next(s for s in _children(spans, wait) if s["name"] == "chat claude-test")
    assert chat["attrs"]["gen_ai.system"] == "anthropic"
    assert chat["attrs"]["gen_ai.request.model"] == "claude-test"
    assert chat["attrs"]["gen_ai.request.max_tokens"] == 4096
    assert chat["attrs"]["gen_ai.usage.input_tokens"] > 0 and chat["attrs"]["gen_ai.usage.output_tokens"] > 0
    http = _children(spans, chat)
    assert len(http) == 1 and http[0]["name"].startswith("POST")
    traceparent = fake_upstream.stats()["seen"][-1]["traceparent"]
    version, trace_id, parent_id, flags = traceparent.split("-")
    assert (version, trace_id, parent_id) == ("00", root["trace"], http[0]["id"])
    assert int(flags, 16) & 1  # sampled

    hit_root = _server_span(receiver, "trace-hit")
    assert (hit_root["attrs"]["cache.status"], hit_root["attrs"]["cache.tier"]) == ("hit", "l1")
    assert receiver.tree(hit_root["trace"]) == [hit_root]  # an L1 hit is one span


def test_a_graphql_request_has_a_span_per_operation_under_its_own(traced: tuple[str, Receiver]) -> None:
    url, receiver = traced
    query = (
        '{ a: generateQuestions(input: {prompt: "span a"}) { provider }'
        ' b: optimize(input: {prompt: "span b", mode: code}) { mode } }'
    )
    answer = requests.post(
        url + "/graphql", json={"query": query}, headers={"X-Request-ID": "trace-graphql"}, timeout=10
    )
    assert answer.status_code == 200 and "errors" not in answer.json(), answer.text
    root = _server_span(receiver, "trace-graphql")
    assert (root["name"], root["attrs"]["http.route"]) == ("POST /graphql", "/graphql")
    spans = receiver.tree(root["trace"], lambda found: sum(s["name"] == "graphql.operation" for s in found) >= 2)
    operations = [s for s in _children(spans, root) if s["name"] == "graphql.operation"]
    assert sorted(s["attrs"]["graphql.field"] for s in operations) == ["generateQuestions", "optimize"]
    assert all(s["attrs"]["http.status_code"] == 200 for s in operations)
    for operation in operations:  # each made its own model call, under its own span
        assert any(s["name"].startswith("chat ") for s in spans if s["parent"] in _descendants(spans, operation))
    again = requests.post(
        url + "/graphql", json={"query": query}, headers={"X-Request-ID": "trace-graphql-hit"}, timeout=10
    )
    hit = _server_span(receiver, "trace-graphql-hit")  # answered from memory: events of the request's span
    assert again.json() == answer.json() and receiver.tree(hit["trace"]) == [hit]
    assert hit["events"].count("graphql.operation") == 2


def _descendants(spans: list[dict[str, Any]], top: dict[str, Any]) -> set[str]:
    found, frontier = {top["id"]}, [top["id"]]
    while frontier:
        parent = frontier.pop()
        for span in spans:
            if span["parent"] == parent and span["id"] not in found:
                found.add(span["id"])
                frontier.append(span["id"])
    return found


def test_hits_are_traced_alike_under_the_callers_trace(traced: tuple[str, Receiver]) -> None:
    """A hit with a Cache-Control header that changes nothing and one without make the same
    spans, under the caller's trace."""
    url, receiver = traced
    body = {"prompt": "trace a hit both ways", "mode": "code"}
    requests.post(url + "/api/optimize", json=body, timeout=10).raise_for_status()
    trees = {}
    for name, extra in (("flask", {"Cache-Control": "max-age=600"}), ("front", {})):
        trace_id = f"{len(trees) + 1:032x}"
        headers = {"X-Request-ID": f"hit-{name}", "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01", **extra}
        hit = requests.post(url + "/api/optimize", json=body, headers=headers, timeout=10)
        assert hit.headers["X-Cache"] == "HIT"
        root = _server_span(receiver, f"hit-{name}")
        assert (root["trace"], root["parent"]) == (trace_id, "00f067aa0ba902b7")
        trees[name] = (root, receiver.tree(trace_id))

    (flask_root, flask_spans), (front_root, front_spans) = trees["flask"], trees["front"]
    for field in ("name", "kind", "scope"):
        assert front_root[field] == flask_root[field], field
    assert front_root["attrs"].keys() == flask_root["attrs"].keys()
    for key, value in flask_root["attrs"].items():
        if key not in ("net.peer.port", "http.request.header.x_request_id"):
            assert front_root["attrs"][key] == value, key

    assert front_root["attrs"]["cache.status"] == "hit"
    assert front_spans == [front_root] and flask_spans == [flask_root]  # an L1 hit is one span


def test_coalesced_follower_waits_without_calling(
    traced: tuple[str, Receiver], fake_upstream: FakeUpstreamProcess
) -> None:
    url, receiver = traced
    body = {"prompt": "trace a coalesced pair", "mode": "video"}

    def send(i: int) -> requests.Response:
        return requests.post(url + "/api/optimize", json=body, headers={"X-Request-ID": f"pair-{i}"}, timeout=60)

    responses, _ = held_burst(fake_upstream, [url], send, 2)
    follower = next(i for i, r in enumerate(responses) if r.headers["X-Cache"] == "COALESCED")
    root = _server_span(receiver, f"pair-{follower}")
    spans = receiver.tree(root["trace"], lambda found: any(s["name"] == "coalescing.wait" for s in found))
    waits = [s for s in spans if s["name"] == "coalescing.wait"]
    assert [w["attrs"]["coalescing.role"] for w in waits] == ["follower"]
    assert not [s for s in spans if s["name"].startswith("chat")]
    assert fake_upstream.calls() == 1


def test_retries_are_span_events(traced: tuple[str, Receiver], fake_upstream: FakeUpstreamProcess) -> None:
    url, receiver = traced
    fake_upstream.control(faults=[{"status": 529, "headers": {"retry-after-ms": "10"}}])
    response = requests.post(
        url + "/api/optimize",
        json={"prompt": "retry trace", "mode": "code"},
        headers={"X-Request-ID": "trace-retry"},
        timeout=10,
    )
    assert response.status_code == 200
    root = _server_span(receiver, "trace-retry")
    spans = receiver.tree(root["trace"], lambda found: any(s["name"].startswith("chat") for s in found))
    chat = next(s for s in spans if s["name"].startswith("chat"))
    assert chat["events"] == ["retry"]
    assert chat["attrs"]["circuit_breaker.state"] == "closed"


def test_a_stream_span_ends_with_the_stream_and_marks_the_first_token(
    traced: tuple[str, Receiver], fake_upstream: FakeUpstreamProcess
) -> None:
    url, receiver = traced
    fake_upstream.control(stream_chunks=5)
    with requests.post(
        url + "/api/optimize-stream",
        json={"prompt": "trace a stream", "mode": "code"},
        headers={"X-Request-ID": "trace-stream"},
        stream=True,
        timeout=30,
    ) as response:
        assert b"event: done" in response.content
    span = receiver.wait_for(lambda s: s["name"] == "stream claude-test")[0]
    assert span["events"] == ["first_token"]
    assert span["attrs"]["prompt_builder.mode"] == "code"
    root = _server_span(receiver, "trace-stream")  # the producer's span is in the request's trace
    assert (span["trace"], span["parent"]) == (root["trace"], root["id"])
    chats = receiver.tree(span["trace"], lambda found: any(s["name"].startswith("POST") for s in found))
    assert any(s["name"].startswith("POST") for s in chats)  # the upstream request inside the stream's trace


def test_a_request_the_limiter_refuses_has_its_span(_fake_upstream_process: FakeUpstreamProcess) -> None:
    """The instrumentation's hook runs before the limiter's: a 429 is traced like any answer
    (status, request id), and the server logs no "span missing" warning for it."""
    receiver = Receiver()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_TRACES_SAMPLER": "always_on",
        "RATE_LIMIT": "1/minute",
        "LOG_LEVEL": "INFO",
    }
    try:
        with start_server(env, workers=1) as server:
            body = {"prompt": "count me once", "mode": "code"}
            statuses = [
                requests.post(
                    server.url + "/api/optimize", json=body, headers={"X-Request-ID": f"limited-{i}"}, timeout=10
                ).status_code
                for i in range(2)
            ]
            assert statuses == [200, 429]
            refused = _server_span(receiver, "limited-1")
            assert refused["name"] == "POST /api/optimize" and refused["attrs"]["http.status_code"] == 429
            assert _server_span(receiver, "limited-0")["attrs"]["http.status_code"] == 200
            assert "span missing" not in server.output()
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


@pytest.fixture(scope="module")
def sampled_at(_fake_upstream_process: FakeUpstreamProcess) -> Iterator[Any]:
    """Start a server whose sampler is parentbased_traceidratio at the given ratio."""
    started: list[Any] = []
    receiver = Receiver()

    def start(ratio: float) -> str:
        env = {
            "ANTHROPIC_API_KEY": "sk-ant-test",
            "ANTHROPIC_BASE_URL": _fake_upstream_process.url,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": str(ratio),
            "LLM_MODEL": "claude-test",
        }
        context = start_server(env, workers=1)
        started.append(context)
        return context.__enter__().url  # type: ignore[no-any-return]

    yield start, receiver
    for context in started:
        context.__exit__(None, None, None)
    receiver.server.shutdown()
    receiver.server.server_close()


def _roots(receiver: Receiver, prefix: str) -> list[dict[str, Any]]:
    with receiver.lock:
        return [s for s in receiver.spans if s["attrs"].get("http.request.header.x_request_id", "").startswith(prefix)]


def test_sampling_is_decided_at_the_edge_and_a_parent_decides_first(
    sampled_at: Any, fake_upstream: FakeUpstreamProcess
) -> None:
    """Ratio 0: a request makes no span at all — not its own, not the gateway's, not the
    outgoing HTTP one — and the model API is told it is not sampled. A caller's sampled
    `traceparent` is followed: the whole tree is recorded under the caller's trace."""
    start, receiver = sampled_at
    url = start(0.0)
    body = {"prompt": "sampled at the edge", "mode": "code"}
    quiet = requests.post(url + "/api/optimize", json=body, headers={"X-Request-ID": "edge-quiet"}, timeout=10)
    assert quiet.status_code == 200
    unsampled_parent = fake_upstream.stats()["seen"][-1]["traceparent"]
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    headers = {"X-Request-ID": "edge-traced", "traceparent": f"00-{trace_id}-{parent}-01"}
    body["prompt"] = "sampled by its caller"
    traced = requests.post(url + "/api/optimize", json=body, headers=headers, timeout=10)
    assert traced.status_code == 200
    root = _server_span(receiver, "edge-traced")
    assert (root["trace"], root["parent"]) == (trace_id, parent)
    spans = receiver.tree(trace_id, lambda found: any(s["name"].startswith("POST") for s in found))
    assert {"coalescing.wait", "chat claude-test"} <= {s["name"] for s in spans}
    # Spans are exported in the order they end: the quiet request's would have come first.
    with receiver.lock:
        quiet_traces = {s["trace"] for s in receiver.spans if s["trace"] != trace_id}
    assert quiet_traces == set() and _roots(receiver, "edge-quiet") == []
    assert int(unsampled_parent.split("-")[3], 16) & 1 == 0  # the model API: not sampled


def test_a_stream_the_edge_did_not_sample_makes_no_span_in_its_producer(
    sampled_at: Any, fake_upstream: FakeUpstreamProcess
) -> None:
    """The caller says "not sampled" (parent-based sampler at ratio 1): the stream's producer
    greenlet, outside the request, makes no span of its own either; the same stream from a
    sampled caller does, under the caller's trace."""
    start, receiver = sampled_at
    url = start(1.0)
    fake_upstream.control(stream_chunks=3)
    body = {"prompt": "a stream not sampled", "mode": "socratic"}
    trace_ids = {"00": "0af7651916cd43dd8448eb211c80319c", "01": "1af7651916cd43dd8448eb211c80319c"}
    for flags in ("00", "01"):
        body["prompt"] += f" {flags}"
        headers = {"traceparent": f"00-{trace_ids[flags]}-b7ad6b7169203331-{flags}"}
        with requests.post(url + "/api/optimize-stream", json=body, headers=headers, stream=True, timeout=30) as r:
            assert b"event: done" in r.content
    sampled = receiver.wait_for(lambda s: s["name"] == "stream claude-test" and s["trace"] == trace_ids["01"])
    assert len(sampled) == 1
    # Spans are exported in the order they end: the unsampled stream's would have come first.
    with receiver.lock:
        streams = [s for s in receiver.spans if s["attrs"].get("prompt_builder.mode") == "socratic"]
        unsampled = [s for s in receiver.spans if s["trace"] == trace_ids["00"]]
    assert streams == sampled and unsampled == []


def test_the_edge_samples_about_the_ratio(sampled_at: Any) -> None:
    start, receiver = sampled_at
    url = start(0.5)
    n = 200
    with requests.Session() as session:
        for i in range(n):
            r = session.post(
                url + "/api/optimize",
                json={"prompt": "one cached answer", "mode": "code"},
                headers={"X-Request-ID": f"ratio-{i}"},
                timeout=10,
            )
            assert r.status_code == 200
    # The last requests' spans may still be on their way: count once no more arrive.
    counts = [-1]

    def settled() -> bool:
        time.sleep(0.3)
        counts.append(len(_roots(receiver, "ratio-")))
        return counts[-1] == counts[-2] > 0

    wait_until(settled, what="the sampled requests' spans")
    seen = counts[-1]
    # Binomial(200, 0.5): mean 100, sd 7.1; 60-140 is more than 5.6 sd either way.
    assert 60 <= seen <= 140, seen


@pytest.mark.parametrize("stop_signal", ["SIGTERM", "SIGQUIT"])
def test_spans_queued_in_a_worker_reach_the_receiver_when_it_stops(
    _fake_upstream_process: FakeUpstreamProcess, stop_signal: str
) -> None:
    """Spans still queued when a worker stops are exported on its way out (gunicorn's
    worker_exit hook), on a graceful stop and a quick one alike: the batch delay here is ten
    minutes, so nothing leaves the worker before it stops."""
    import signal

    receiver = Receiver()
    env = {
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "ANTHROPIC_BASE_URL": _fake_upstream_process.url,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_BSP_SCHEDULE_DELAY": "600000",
        "OTEL_TRACES_SAMPLER": "always_on",
        "LLM_MODEL": "claude-test",
    }
    try:
        with start_server(env, workers=2) as server:
            ids = [f"exit-{stop_signal}-{i}" for i in range(6)]
            for i, request_id in enumerate(ids):
                answer = requests.post(
                    f"{server.url}/api/optimize",
                    json={"prompt": f"flush on exit {i}", "mode": "reasoning"},
                    headers={"X-Request-ID": request_id},
                    timeout=30,
                )
                assert answer.status_code == 200
            assert not _roots(receiver, f"exit-{stop_signal}-")  # held in the workers until they stop
            server.proc.send_signal(getattr(signal, stop_signal))
            assert server.proc.wait(timeout=60) == 0
            found = {s["attrs"]["http.request.header.x_request_id"] for s in _roots(receiver, f"exit-{stop_signal}-")}
            assert found == set(ids), server.output()
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
