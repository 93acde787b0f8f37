"""The cross-process lease and channel (SharedStreams) against a private redis-server, in one
process: a JSON caller leads or follows, gets the leader's answer or error, takes over from a
leader that died, and goes on alone when Redis is away; a stream relays every event."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import gevent
import pytest
import redis

from app.cache import CachedValue, RedisCache, RedisHealth
from app.coalescing import SharedStreams
from app.errors import UpstreamError

LEASE = 0.6


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url, socket_timeout=5)
    connection.flushdb()
    yield connection
    connection.close()


def _shared(client: redis.Redis) -> tuple[SharedStreams, RedisCache, RedisHealth]:
    health = RedisHealth()
    waits: list[int] = []
    shared = SharedStreams(client, client, "t:", LEASE, health, on_wait=waits.append)
    return shared, RedisCache(client, "t:", 60, health), health


def _value(text: bytes = b'{"p":"answer"}') -> CachedValue:
    now = time.time()
    return CachedValue(text, stored_at=now, fresh_until=now + 60)


def _later(seconds: float, action: object) -> threading.Thread:
    """Run `action` in another thread after `seconds`: the other process's leader."""

    def run() -> None:
        time.sleep(seconds)
        action()  # type: ignore[operator]

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_the_first_caller_leads_and_its_end_marker_frees_the_key(client: redis.Redis) -> None:
    shared, l2, _ = _shared(client)
    calls: list[str] = []

    def call() -> CachedValue:
        calls.append("called")
        value = _value()
        l2.set("k", value)  # the gateway's call stores the answer before the end marker
        return value

    value, coalesced = shared.run("k", call, 5, lambda: l2.get("k"))
    assert (calls, coalesced, value.data) == (["called"], False, b'{"p":"answer"}')
    gevent.sleep(0.05)  # the end goes out off the caller's time
    assert client.get("t:sse:{k}:lock") is None
    assert shared.claim("k") is not None  # free for the next call


def test_a_follower_gets_the_leaders_answer_from_l2_at_the_end(client: redis.Redis) -> None:
    leader, l2, _ = _shared(client)
    follower, _, _ = _shared(client)
    lock = leader.claim("k")
    assert lock is not None

    def finish() -> None:
        l2.set("k", _value(b'{"p":"from the leader"}'))
        leader.end("k", lock, ok=True)

    thread = _later(0.3, finish)
    value, coalesced = follower.run("k", lambda: pytest.fail("the follower called"), 5, lambda: l2.get("k"))
    thread.join()
    assert coalesced and value.data == b'{"p":"from the leader"}'


def test_a_follower_raises_the_leaders_error(client: redis.Redis) -> None:
    leader, l2, _ = _shared(client)
    follower, _, _ = _shared(client)
    lock = leader.claim("k")
    assert lock is not None
    error = UpstreamError("Upstream model API error", details="the model answered 500", retry_after=3)
    thread = _later(0.2, lambda: leader.end("k", lock, ok=False, error=error))
    with pytest.raises(UpstreamError) as raised:
        follower.run("k", lambda: pytest.fail("the follower called"), 5, lambda: l2.get("k"))
    thread.join()
    assert (raised.value.details, raised.value.retry_after) == ("the model answered 500", 3)


def test_a_follower_leads_when_the_leader_dies_without_an_end(client: redis.Redis) -> None:
    leader, l2, _ = _shared(client)
    follower, _, _ = _shared(client)
    assert leader.claim("k") is not None  # and never renewed nor ended: its lease runs out
    began = time.monotonic()
    value, coalesced = follower.run("k", lambda: _value(b'{"p":"mine"}'), 10, lambda: l2.get("k"))
    assert not coalesced and value.data == b'{"p":"mine"}'
    assert time.monotonic() - began < LEASE + 2  # within about a lease, not the caller's deadline


def test_without_redis_the_caller_calls_alone_and_redis_is_paused() -> None:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    gone = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    shared, _, health = _shared(gone)
    value, coalesced = shared.run("k", lambda: _value(b'{"p":"alone"}'), 5, lambda: None)
    assert not coalesced and value.data == b'{"p":"alone"}'
    assert health.failures == 1 and not health.available()


def test_a_relay_copies_every_event_to_the_end(client: redis.Redis) -> None:
    leader, _, _ = _shared(client)
    follower, _, _ = _shared(client)
    lock = leader.claim("k")
    assert lock is not None
    events = [f"event: refined_delta\ndata: {i}\n\n".encode() for i in range(5)]

    def publish() -> None:
        for event in events:
            assert leader.publish("k", lock, event)
        leader.end("k", lock, ok=True)

    thread = _later(0.2, publish)
    got: list[bytes] = []
    ended = follower.relay("k", got.append, time.monotonic() + 5, lambda reason: reason.encode())
    thread.join()
    assert ended is True and got == events
