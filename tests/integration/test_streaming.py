"""POST /api/optimize-stream through real gunicorn: the events, shared upstream streams, the cache
shared with /api/optimize, mid-stream faults, and cancellation when the caller leaves.

Streams are read with sseclient-py over requests, as a client would. Concurrency is made true by
construction: the fake upstream holds its answer (or pauses mid-stream) until the service's own
counters say every caller has joined."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests
import sseclient

from tests.support import (
    FakeUpstreamProcess,
    Server,
    held_burst,
    metric_total,
    provider_env,
    redis_env,
    redis_server,
    start_server,
    wait_until,
    waiting_requests,
)

pytestmark = pytest.mark.integration

BODY = {"prompt": "stream me a plan", "mode": "code"}


def _open(url: str, body: dict | None = None, **headers: str) -> requests.Response:
    response = requests.post(
        url + "/api/optimize-stream",
        json=body or BODY,
        headers={"Connection": "close", **headers},
        stream=True,
        timeout=60,
    )
    return response


def _events(response: requests.Response) -> list[tuple[str, dict]]:
    """Every event of the stream (SSE comments are not events), decoded."""
    client = sseclient.SSEClient(response.iter_content(chunk_size=None))
    return [(event.event, json.loads(event.data)) for event in client.events()]


def _read(url: str, body: dict | None = None) -> tuple[str, list[tuple[str, dict]]]:
    with _open(url, body) as response:
        assert response.status_code == 200, response.text[:300]
        return response.headers["X-Cache"], _events(response)


def _text(events: list[tuple[str, dict]]) -> str:
    deltas = "".join(data["delta"] for name, data in events if name == "refined_delta")
    refined = [data for name, data in events if name == "refined"]
    assert len(refined) == 1 and refined[0]["refined"] == deltas, "deltas must join to the refined text"
    assert events[-1] == ("done", {"status": "finished"})
    return deltas


@pytest.fixture(scope="module")
def template_server() -> Iterator[Server]:
    with start_server({}, workers=1) as server:
        yield server


def test_offline_stream_headers_and_event_sequence(template_server: Server) -> None:
    with _open(template_server.url, {"prompt": "explain vaccines", "mode": "socratic"}) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Accel-Buffering"] == "no"
        assert response.headers["X-Cache"] == "MISS" and response.headers["X-Request-ID"]
        events = _events(response)
    names = [name for name, _ in events]
    assert names[-2:] == ["refined", "done"] and set(names[:-2]) == {"refined_delta"} and len(names) > 5
    text = _text(events)
    assert text.startswith("## Learning objective\nexplain vaccines")
    metadata = events[-2][1]["metadata"]
    assert metadata == {
        "mode": "socratic",
        "provider": "template",
        "model": "template-v1",
        "usage": {"inputTokens": 0, "outputTokens": 0},
    }


def test_the_access_line_of_a_stream_has_its_ttft_and_total(fake_upstream: FakeUpstreamProcess) -> None:
    fake_upstream.control(stream_chunks=10, stream_interval=0.02)
    env = {**provider_env("anthropic", fake_upstream), "LOG_LEVEL": "INFO"}
    with start_server(env) as server:
        with _open(server.url, None, **{"X-Request-ID": "stream-log-1"}) as response:
            _text(_events(response))

        def line() -> dict | None:
            for text in server.output().splitlines():
                if text.startswith("{") and "stream-log-1" in text:
                    return json.loads(text)  # type: ignore[no-any-return]
            return None

        entry = wait_until(line, what="the stream's access line")
        assert entry["endpoint"] == "optimize.optimize_stream" and entry["cache"] == "MISS"
        assert 0 < entry["ttft_ms"] < entry["duration_ms"] and entry["bytes"] > 0
        assert entry["duration_ms"] >= 9 * 20  # written at the end: it spans the paced deltas


def test_bad_input_is_a_json_error_before_any_stream(template_server: Server) -> None:
    response = requests.post(
        template_server.url + "/api/optimize-stream", json={"prompt": "", "mode": "code"}, timeout=10
    )
    assert response.status_code == 400 and response.headers["Content-Type"] == "application/json"
    assert set(response.json()) == {"error", "details", "requestId"}


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_stream_then_json_hit_then_stream_replayed_from_cache(
    provider: str, fake_upstream: FakeUpstreamProcess
) -> None:
    with start_server(provider_env(provider, fake_upstream), workers=1) as server:
        status, events = _read(server.url)
        assert status == "MISS" and fake_upstream.calls() == 1
        text = _text(events)
        tokens = fake_upstream.stats()["tokens"]
        usage = events[-2][1]["metadata"]["usage"]
        assert (usage["inputTokens"], usage["outputTokens"]) == (tokens["input"], tokens["output"])
        as_json = requests.post(server.url + "/api/optimize", json=BODY, timeout=10)
        assert as_json.headers["X-Cache"] == "HIT" and as_json.json()["optimizedPrompt"] == text.strip()
        status, replay = _read(server.url)
        assert status == "HIT" and _text(replay) == text.strip()
        assert fake_upstream.calls() == 1  # the JSON hit and the replay cost nothing upstream
        assert metric_total([server.url], "streams_finished_total") == 1


def _comparable(raw: bytes) -> bytes:
    """The event bytes of a stream without its SSE comment lines (heartbeats)."""
    return b"".join(block + b"\n\n" for block in raw.split(b"\n\n") if block and not block.startswith(b":"))


@pytest.mark.parametrize(("workers", "shared"), [(1, False), (2, False), (2, True)])
def test_identical_concurrent_streams_share_one_upstream_stream(
    workers: int, shared: bool, fake_upstream: FakeUpstreamProcess, request: pytest.FixtureRequest
) -> None:
    n = 25  # concurrent by construction (held_burst): a larger burst proves nothing more
    fake_upstream.control(stream_chunks=20)
    env = provider_env("anthropic", fake_upstream)
    if shared:
        env.update(redis_env(request.getfixturevalue("redis_url")))
    with start_server(env, workers=workers) as server:

        def send(_: int) -> tuple[str, bytes]:
            with _open(server.url) as response:
                return response.headers["X-Cache"], response.content

        followers = lambda: int(metric_total([server.url], "stream_followers_total"))  # noqa: E731
        results, parked = held_burst(fake_upstream, [server.url], send, n, waiting=followers)
        bodies = {_comparable(raw) for _, raw in results}
        statuses = [status for status, _ in results]
        label = f"{workers} worker(s){' + Redis' if shared else ''}"
        print(f"\n{n} identical streams, {label}: {fake_upstream.calls()} upstream stream(s)")
        assert fake_upstream.calls() == parked and 1 <= parked <= (1 if shared else workers)
        assert statuses.count("MISS") == parked and statuses.count("COALESCED") == n - parked
        if parked == 1:
            assert len(bodies) == 1  # byte-identical event sequences, whichever worker served them
        for raw in bodies:
            _text([(e.event, json.loads(e.data)) for e in sseclient.SSEClient(iter([raw])).events()])


def test_two_instances_share_one_stream_through_redis(fake_upstream: FakeUpstreamProcess, redis_url: str) -> None:
    env = {**provider_env("anthropic", fake_upstream), **redis_env(redis_url)}
    fake_upstream.control(stream_chunks=30, faults=[{"action": "stream_pause", "after": 10}])
    body = {"prompt": "shared across instances", "mode": "video"}
    with start_server(env) as a, start_server(env) as b:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(_read, a.url, body)
            wait_until(lambda: fake_upstream.stats()["paused"] == 1, what="the stream paused at 10 of 30")
            second = pool.submit(_read, b.url, body)  # joins mid-stream, from the other instance
            wait_until(lambda: metric_total([b.url], "stream_followers_total") == 1, what="the follower on b")
            fake_upstream.control(resume=True)
            (status_a, events_a), (status_b, events_b) = first.result(), second.result()
        assert (status_a, status_b) == ("MISS", "COALESCED")
        assert events_a == events_b and _text(events_b)
        assert fake_upstream.calls() == 1
        again = requests.post(b.url + "/api/optimize", json=body, timeout=10)
        assert again.headers["X-Cache"] == "HIT"  # b kept the answer it relayed


def _joined(urls: list[str]) -> int:
    """Callers waiting on another's call: JSON callers (the waiting gauge) and callers that
    joined a call in flight (counted as they join: streams, and JSON callers of a stream)."""
    return waiting_requests(urls) + int(metric_total(urls, "coalesced_requests_total"))


def _json_text(url: str, body: dict) -> tuple[str, str]:
    response = requests.post(url + "/api/optimize", json=body, headers={"Connection": "close"}, timeout=60)
    assert response.status_code == 200, response.text[:300]
    return response.headers["X-Cache"], response.json()["optimizedPrompt"].strip()


def _stream_text(url: str, body: dict) -> tuple[str, str]:
    status, events = _read(url, body)
    return status, _text(events).strip()


@pytest.mark.parametrize("first", ["json", "stream"])
def test_json_and_stream_callers_on_two_instances_make_one_call(
    first: str, fake_upstream: FakeUpstreamProcess, redis_url: str
) -> None:
    """One lease and one channel per key across processes, whichever kind of caller leads."""
    env = {**provider_env("anthropic", fake_upstream), **redis_env(redis_url)}
    body = {"prompt": f"one call across instances, {first} first", "mode": "code"}
    kinds = {"json": _json_text, "stream": _stream_text}
    second = "stream" if first == "json" else "json"
    with (
        start_server(env, workers=1) as a,
        start_server(env, workers=1) as b,
        ThreadPoolExecutor(2) as pool,
        fake_upstream.hold(),  # exited first: the gate opens before the pool waits for its threads
    ):
        led = pool.submit(kinds[first], a.url, body)
        wait_until(lambda: fake_upstream.held() == 1, what=f"the {first} call upstream, on a")
        followed = pool.submit(kinds[second], b.url, body)
        wait_until(lambda: _joined([b.url]) == 1, what=f"the {second} caller on b waiting")
        fake_upstream.release()
        (status_a, text_a), (status_b, text_b) = led.result(), followed.result()
    assert fake_upstream.calls() == 1
    assert (status_a, status_b) == ("MISS", "COALESCED")
    assert text_a == text_b != ""


def _redis_answers(url: str) -> bool:
    with redis.Redis.from_url(url, socket_timeout=0.1) as client:
        try:
            return bool(client.ping())
        except redis.TimeoutError:
            return False


def test_a_follower_that_loses_redis_mid_stream_finishes_from_its_own_call(
    fake_upstream: FakeUpstreamProcess, own_redis_url: str
) -> None:
    """Redis stops while a follower on another instance relays the leader's stream: the follower
    makes the answer itself and, as it continues the text its caller already has (the fake model
    is deterministic), sends the rest — the whole text, never a cut one."""
    env = {**provider_env("anthropic", fake_upstream), **redis_env(own_redis_url)}
    fake_upstream.control(stream_chunks=30, faults=[{"action": "stream_pause", "after": 10}])
    body = {"prompt": "redis goes away mid-relay", "mode": "code"}
    with start_server(env) as a, start_server(env) as b, ThreadPoolExecutor(2) as pool:
        first = pool.submit(_read, a.url, body)
        wait_until(lambda: fake_upstream.stats()["paused"] == 1, what="the stream paused at 10 of 30")
        second = pool.submit(_read, b.url, body)
        wait_until(lambda: metric_total([b.url], "stream_followers_total") == 1, what="the follower on b")
        with redis.Redis.from_url(own_redis_url) as client, contextlib.suppress(redis.ConnectionError):
            client.shutdown(nosave=True)
        fake_upstream.control(resume=True)
        (status_a, events_a), (status_b, events_b) = first.result(), second.result()
    assert (status_a, status_b) == ("MISS", "COALESCED")
    assert _text(events_b) == _text(events_a) != ""
    assert fake_upstream.calls() == 2  # the leader's stream, and the follower's own call


@pytest.mark.parametrize("join_after", [0, 50, 99])
def test_a_follower_joining_mid_stream_gets_the_whole_text(join_after: int, fake_upstream: FakeUpstreamProcess) -> None:
    fake_upstream.control(stream_chunks=100, faults=[{"action": "stream_pause", "after": join_after}])
    with start_server(provider_env("anthropic", fake_upstream), workers=1) as server:
        with _open(server.url) as first:
            events = sseclient.SSEClient(first.iter_content(chunk_size=None)).events()
            seen = []
            wait_until(lambda: fake_upstream.stats()["paused"] == 1, what="the upstream paused mid-stream")
            while len(seen) < join_after:  # the leader has everything sent before the pause
                event = next(events)
                seen.append((event.event, json.loads(event.data)))
            with ThreadPoolExecutor(1) as pool:
                late = pool.submit(_read, server.url)
                wait_until(lambda: metric_total([server.url], "stream_followers_total") == 1, what="the follower")
                fake_upstream.control(resume=True)
                status, follower_events = late.result()
            seen += [(event.event, json.loads(event.data)) for event in events]
        assert status == "COALESCED"
        assert _text(follower_events) == _text(seen)
        assert fake_upstream.calls() == 1


@pytest.mark.parametrize("redis", [False, True])
def test_json_and_stream_callers_join_each_other(redis: bool, fake_upstream: FakeUpstreamProcess) -> None:
    def run(server: Server) -> None:
        with fake_upstream.hold(), ThreadPoolExecutor(2) as pool:
            as_json = pool.submit(requests.post, server.url + "/api/optimize", json=BODY, timeout=60)
            wait_until(lambda: fake_upstream.held() == 1, what="the JSON call upstream")
            streamed = pool.submit(_read, server.url)
            wait_until(lambda: metric_total([server.url], "stream_followers_total") == 1, what="the stream joined")
            fake_upstream.release()
            status, events = streamed.result()
            assert status == "COALESCED" and _text(events) == as_json.result().json()["optimizedPrompt"]
        assert fake_upstream.calls() == 1
        # ... and the other way: a JSON call joins a stream in flight
        other = {"prompt": "the other way round", "mode": "code"}
        fake_upstream.control(faults=[{"action": "stream_pause", "after": 3}])
        with ThreadPoolExecutor(2) as pool:
            streamed = pool.submit(_read, server.url, other)
            wait_until(lambda: fake_upstream.stats()["paused"] == 1, what="the stream upstream")
            as_json = pool.submit(requests.post, server.url + "/api/optimize", json=other, timeout=60)
            wait_until(lambda: waiting_requests([server.url]) == 1, what="the JSON call joined")
            fake_upstream.control(resume=True)
            assert as_json.result().headers["X-Cache"] == "COALESCED"
            assert as_json.result().json()["optimizedPrompt"] == _text(streamed.result()[1]).strip()
        assert fake_upstream.calls() == 2

    env = provider_env("anthropic", fake_upstream)
    if redis:
        with redis_server() as url, start_server({**env, **redis_env(url)}, workers=1) as server:
            run(server)
    else:
        with start_server(env, workers=1) as server:
            run(server)


@pytest.mark.parametrize(
    "fault",
    [
        {"action": "stream_error", "after": 3},
        {"action": "stream_reset", "after": 3},
        {"action": "stream_stall", "after": 3, "seconds": 30},
    ],
)
def test_a_mid_stream_fault_is_an_error_event_for_every_follower(
    fault: dict, fake_upstream: FakeUpstreamProcess
) -> None:
    env = {**provider_env("anthropic", fake_upstream), "UPSTREAM_TIMEOUT": "3", "UPSTREAM_MAX_RETRIES": "0"}
    fake_upstream.control(stream_chunks=10, faults=[fault])
    with start_server(env, workers=1) as server:
        followers = lambda: int(metric_total([server.url], "stream_followers_total"))  # noqa: E731
        results, _ = held_burst(fake_upstream, [server.url], lambda _: _read(server.url), 5, waiting=followers)
        for _, events in results:
            names = [name for name, _ in events]
            assert names[:3] == ["refined_delta"] * 3 and names[-1] == "error" and "refined" not in names
            assert events[-1][1]["status"] == "failed" and events[-1][1]["requestId"]
        assert metric_total([server.url], "circuit_breaker_failures") == 1  # counted against the breaker
        again = requests.post(server.url + "/api/optimize", json=BODY, timeout=10)
        assert again.status_code == 200 and again.headers["X-Cache"] == "MISS"  # nothing was cached
        assert fake_upstream.calls() == 2


def test_a_caller_who_leaves_alone_stops_the_upstream_within_a_second(fake_upstream: FakeUpstreamProcess) -> None:
    fake_upstream.control(stream_chunks=400, stream_interval=0.05)  # 20 s if nobody stopped it
    with start_server(provider_env("anthropic", fake_upstream), workers=1) as server:
        response = _open(server.url)
        events = sseclient.SSEClient(response.iter_content(chunk_size=None)).events()
        next(events)
        response.close()
        left = time.time()
        wait_until(lambda: fake_upstream.stats()["streams"]["aborted"] == 1, timeout=30, what="the upstream closed")
        closed_after = fake_upstream.stats()["lastStreamAbort"] - left
        print(f"\nsole caller left: the upstream stream was closed {closed_after * 1000:.0f} ms later")
        assert closed_after < 1.0
        wait_until(lambda: metric_total([server.url], "streams_active") == 0, what="no stream left")
        assert fake_upstream.stats()["streams"]["completed"] == 0


def test_when_one_of_two_leaves_the_other_gets_everything(fake_upstream: FakeUpstreamProcess) -> None:
    fake_upstream.control(stream_chunks=40, stream_interval=0.02)
    with start_server(provider_env("anthropic", fake_upstream), workers=1) as server:
        with fake_upstream.hold(), ThreadPoolExecutor(1) as pool:
            leaving = _open(server.url)
            staying = pool.submit(_read, server.url)
            wait_until(lambda: metric_total([server.url], "stream_followers_total") == 1, what="the second caller")
            fake_upstream.release()
            next(sseclient.SSEClient(leaving.iter_content(chunk_size=None)).events())
            leaving.close()
            status, events = staying.result()
        assert status == "COALESCED" and _text(events)
        stats = fake_upstream.stats()["streams"]
        assert (stats["completed"], stats["aborted"]) == (1, 0)
