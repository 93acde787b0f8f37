"""Streams across processes, the long drills: twenty mixed callers over two instances make one
call; a leader whose Redis stalls mid-publish still finishes its followers on another instance;
300 callers who leave mid-stream leave no stream, lock or socket behind. (make test-fleet; the
stream's everyday behaviour is in tests/integration/test_streaming.py.)"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from tests.integration.test_streaming import _joined, _json_text, _open, _read, _redis_answers, _stream_text, _text
from tests.support import (
    FakeUpstreamProcess,
    held_burst,
    metric_total,
    provider_env,
    redis_env,
    start_server,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_twenty_mixed_callers_on_two_instances_make_one_call(
    fake_upstream: FakeUpstreamProcess, redis_url: str
) -> None:
    env = {**provider_env("anthropic", fake_upstream), **redis_env(redis_url)}
    body = {"prompt": "twenty mixed callers, two instances", "mode": "research"}
    with start_server(env, workers=1) as a, start_server(env, workers=1) as b:
        urls = [a.url, b.url]

        def send(i: int) -> tuple[str, str]:  # JSON and streams, on a and b in turn
            return (_json_text if i % 4 < 2 else _stream_text)(urls[i % 2], body)

        results, parked = held_burst(fake_upstream, urls, send, 20, waiting=lambda: _joined(urls))
    statuses = [status for status, _ in results]
    print(f"\n20 mixed callers (10 JSON, 10 streams) on 2 instances: {fake_upstream.calls()} upstream call(s)")
    assert fake_upstream.calls() == parked == 1
    assert statuses.count("MISS") == 1 and statuses.count("COALESCED") == 19
    assert len({text for _, text in results}) == 1


def test_a_leader_that_could_not_publish_all_of_its_stream_still_finishes_its_followers(
    fake_upstream: FakeUpstreamProcess, redis_url: str
) -> None:
    """Redis stalls (DEBUG SLEEP) just as the leader publishes: its event never reaches Redis, so
    it publishes nothing more, finishes for its own caller, and stores the answer in L2 before
    its end marker. The follower on the other instance holds the first part of the text and
    finishes from that answer: the whole text, deltas joined, done — never a cut text."""
    env = {**provider_env("anthropic", fake_upstream), "REDIS_URL": redis_url}
    fake_upstream.control(stream_chunks=40, stream_interval=0.1, faults=[{"action": "stream_pause", "after": 10}])
    body = {"prompt": "a hole in the shared stream", "mode": "code"}
    with (
        start_server(env) as a,
        start_server(env) as b,
        ThreadPoolExecutor(3) as pool,
        redis.Redis.from_url(redis_url, socket_timeout=10) as sleeper,
    ):
        first = pool.submit(_read, a.url, body)
        wait_until(lambda: fake_upstream.stats()["paused"] == 1, what="the stream paused at 10 of 40")
        second = pool.submit(_read, b.url, body)
        wait_until(lambda: metric_total([b.url], "stream_followers_total") == 1, what="the follower on b")
        asleep = pool.submit(sleeper.execute_command, "DEBUG", "SLEEP", "1.5")
        wait_until(lambda: not _redis_answers(redis_url), what="Redis asleep")
        fake_upstream.control(resume=True)  # the next event's XADD waits on the sleeping Redis
        (status_a, events_a), (status_b, events_b) = first.result(), second.result()
        asleep.result()
    assert (status_a, status_b) == ("MISS", "COALESCED")
    assert _text(events_b) == _text(events_a)
    deltas = [sum(name == "refined_delta" for name, _ in events) for events in (events_a, events_b)]
    assert deltas[1] < deltas[0], deltas  # b got the rest in one piece, from L2
    assert fake_upstream.calls() == 1


def test_many_cancelled_streams_leave_nothing_behind(fake_upstream: FakeUpstreamProcess, redis_url: str) -> None:
    """Callers who leave mid-stream, 300 of them, 25 at a time, over 2 workers sharing Redis:
    afterwards no stream is active, every upstream stream was closed (its connection with it),
    Redis holds no lock or follower count, and the workers' sockets do not grow with the count."""
    import psutil
    import redis

    n, at_once = 300, 25  # a leak of one socket per stream (300) is far above the pools' 2 x 25
    fake_upstream.control(stream_chunks=400, stream_interval=0.05)
    env = {**provider_env("anthropic", fake_upstream), "REDIS_URL": redis_url, "REDIS_PREFIX": "leak:"}
    with start_server(env, workers=2) as server:
        workers = [psutil.Process(p.pid) for p in psutil.Process(server.proc.pid).children()]

        def leave(i: int) -> None:
            response = _open(server.url, {"prompt": f"cancel me {i}", "mode": "code"})
            assert response.status_code == 200
            next(response.iter_content(chunk_size=None))
            response.close()

        with ThreadPoolExecutor(at_once) as pool:
            list(pool.map(leave, range(-at_once, 0)))  # warm-up: pools grow to this concurrency once
            wait_until(lambda: fake_upstream.stats()["streams"]["aborted"] == at_once, what="the warm-up closed")
            wait_until(lambda: metric_total([server.url], "streams_active") == 0, what="no active stream")
            fds_before = sum(w.num_fds() for w in workers)
            list(pool.map(leave, range(n)))
        n += at_once
        wait_until(lambda: fake_upstream.stats()["streams"]["aborted"] == n, what="every upstream stream closed")
        wait_until(lambda: metric_total([server.url], "streams_active") == 0, what="no active stream")
        assert fake_upstream.stats()["streams"]["open"] == 0
        assert metric_total([server.url], "streams_finished_total") == n
        assert metric_total([server.url], "stream_buffer_bytes") == 0  # every buffer released
        with redis.Redis.from_url(redis_url) as client:
            locks = list(client.scan_iter("leak:sse:*:lock"))
            counts = [int(client.get(k) or 0) for k in client.scan_iter("leak:sse:*:followers")]
        assert locks == [] and set(counts) <= {0}, (locks, counts)
        # Pools (upstream, Redis) may grow to the concurrency a worker happened to get; a leak
        # would grow with the number of streams (300).
        fds_after = wait_until(
            lambda: ((fds := sum(w.num_fds() for w in workers)) <= fds_before + 2 * at_once and fds) or None,
            what="the workers' sockets within their pools",
        )
        print(
            f"\n{n} cancelled streams: {n} upstream streams closed, 0 active, no Redis lock or follower left; "
            f"worker fds {fds_before} -> {fds_after}"
        )
