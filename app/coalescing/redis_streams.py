"""One upstream call per key across workers and instances: one lease and one channel per key,
shared by JSON callers and stream callers alike.

The lease is the coordination lease (app.coordination.lease, in Redis), renewed by the
process's keeper while its holder works; the channel is a Redis Stream named after the lease's
token, so one call's events never mix with another's. A stream leader appends every event, a
JSON leader none; either way the answer is in L2 before the end marker, which closes the stream
(kept a short while for late joiners). A follower in another process reads the stream from its
first entry, then blocks for the rest (XREAD from the last id seen): it gets the whole stream
and cannot miss an event. Followers are counted in Redis, so a leader whose own callers have
all left goes on while followers elsewhere still read. Every key of one stream shares a hash
tag (one slot of a Redis Cluster).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import gevent
import redis

from app.cache.clients import BLOCK
from app.cache.health import RedisHealth
from app.cache.memory import CachedValue
from app.coordination.lease import Keeper, Lease, RedisLeases, new_token
from app.errors import GatewayTimeoutError, error_from_wire, error_to_wire

__all__ = ["RELAY_BLOCK", "UNREACHABLE", "SharedStreams"]

END_OK, END_FAILED = b"ok", b"failed"
UNREACHABLE = "unreachable"  # relay(): Redis failed before the stream's end (nothing appended for it)

RELAY_BLOCK = BLOCK  # a follower's XREAD wait before it checks that the leader is still there
READ_ATTEMPTS = 3  # failed reads in a row a follower that has relayed events reads on after
CLAIM_TRIES = 3  # a lock claim's tries when Redis is slow to answer


class SharedStreams:
    def __init__(
        self,
        client: redis.Redis,
        reader: redis.Redis,
        prefix: str,
        lease_seconds: float,
        health: RedisHealth,
        retention_seconds: float = 60.0,
        on_wait: Callable[[int], None] | None = None,
    ) -> None:
        self._client = client
        self._locks: redis.Redis = getattr(client, "plain", client)  # used even while Redis is paused
        self._leases = RedisLeases(self._locks)
        self._keeper = Keeper(self._leases, on_error=lambda exc: health.failed("stream lease", exc))
        self._reader = reader  # read timeout RELAY_BLOCK + REDIS_SOCKET_TIMEOUT: XREAD BLOCK waits on it
        self._prefix = prefix
        self._lease = lease_seconds
        self._retention_ms = int(retention_seconds * 1000)
        self.health = health
        self._on_wait = on_wait or (lambda _delta: None)

    def _tag(self, key: str) -> str:
        return f"{self._prefix}sse:{{{key}}}"

    def _events(self, key: str, token: bytes) -> str:
        return f"{self._tag(key)}:events:{token.decode()}"

    # --- leader ----------------------------------------------------------------------------------

    def claim(self, key: str, deadline: float | None = None) -> Lease | None:
        """Return the key's lease when this process now leads its stream, None when another
        does; raise RedisError when Redis cannot tell (the caller then streams on its own). A
        timeout is tried again with the same token, up to CLAIM_TRIES in all within `deadline`
        (as often as it allows while this worker is starved): a late reply on a busy machine
        may have given this process the lease, and a second model call is what we avoid."""
        token, attempt = new_token(), 0
        while True:
            attempt += 1
            try:
                return self._leases.acquire(self._tag(key) + ":lock", self._lease, token)
            except redis.TimeoutError as exc:
                late = self.health.starved(exc)  # this worker's lateness: asked again within the deadline
                if deadline is None or time.monotonic() >= deadline or (attempt >= CLAIM_TRIES and not late):
                    raise
                self.health.failed("coalescing lock", exc)

    def keep(self, lease: Lease) -> None:  # renewed while the leader works, until `end`
        self._keeper.keep(lease)

    def release(self, lease: Lease) -> None:
        """Let go of a lease taken without leading (nothing was published under it)."""
        self._keeper.drop(lease)
        try:
            self._leases.release(lease)
        except redis.RedisError as exc:
            self.health.failed("stream unlock", exc)

    def publish(self, key: str, lock: Lease, event: bytes) -> bool:
        """Append one event; False when Redis failed it (it may or may not be there: the
        leader must then stop publishing and end the stream as failed)."""
        try:
            self._client.xadd(self._events(key, lock.token), {"e": event})
        except redis.RedisError as exc:
            self.health.failed("stream publish", exc)
            return False
        return True

    def end(
        self, key: str, lock: Lease, ok: bool, error: BaseException | None = None, value: CachedValue | None = None
    ) -> None:
        """Close the stream for its followers (with a failed call's `error`: JSON followers raise
        it), keep it a while for late joiners, let go the lead. Tried even while Redis is paused
        after a failure: without the end marker followers would wait out the lease and fail."""
        self._keeper.drop(lock)
        events = self._events(key, lock.token)
        fields: dict[str, bytes] = {"end": END_OK if ok else END_FAILED}
        if error is not None:
            fields["error"] = json.dumps(error_to_wire(error)).encode()
        if value is not None:  # JSON followers take it from here when L2 could not take it
            fields["value"] = value.encode()
        try:
            pipe = self._locks.pipeline(transaction=False)
            pipe.xadd(events, fields)  # type: ignore[arg-type]
            pipe.pexpire(events, self._retention_ms)
            pipe.execute()
        except redis.RedisError as exc:
            self.health.failed("stream end", exc)
        try:
            self._leases.release(lock)  # False: the lease had run out already
        except redis.RedisError as exc:
            self.health.failed("stream unlock", exc)

    def followers(self, key: str) -> int:
        """Followers of the key's stream in other processes (0 when Redis cannot tell)."""
        try:
            return int(self._client.get(self._tag(key) + ":followers") or 0)  # type: ignore[arg-type]
        except redis.RedisError as exc:
            self.health.failed("stream followers", exc)
            return 0

    # --- a JSON caller ---------------------------------------------------------------------------

    def run(
        self, key: str, call: Callable[[], CachedValue], timeout: float, stored: Callable[[], CachedValue | None]
    ) -> tuple[CachedValue, bool]:
        """Return (value, coalesced): `call()`'s value when this process leads the key (`call`
        stores it in L2 before the end marker goes out), else the leader's — a JSON call's or a
        stream's — read with `stored()` once its channel ends; raise the leader's error. Redis
        trouble never fails a request: the caller then runs the call itself."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.health.available():  # Redis failed a moment ago: coalesce in this worker only
                return call(), False
            try:
                lock = self.claim(key, deadline)
            except redis.RedisError as exc:
                self.health.failed("coalescing lock", exc)
                return call(), False
            if lock is not None:
                return self._lead(key, lock, call), False
            end: dict[bytes, bytes] = {}
            self._on_wait(1)
            try:
                ended = self.relay(key, _discard, deadline, _no_event, end.update)
            finally:
                self._on_wait(-1)
            if ended == UNREACHABLE:  # the relay has told the health already: Redis is left alone
                return call(), False
            if b"error" in end:
                raise error_from_wire(json.loads(end[b"error"]))
            value = stored()
            if value is None and b"value" in end:  # L2 did not take it (a slow Redis): the marker did
                value = CachedValue.decode(end[b"value"])
            if value is not None:
                return value, True
            if time.monotonic() >= deadline:
                raise GatewayTimeoutError("Timed out waiting for an identical request in flight")
            # No answer to show (the leader died, or its answer could not be stored): lead.

    def _lead(self, key: str, lock: Lease, call: Callable[[], CachedValue]) -> CachedValue:
        self.keep(lock)
        error: BaseException | None = None
        value: CachedValue | None = None
        try:
            value = call()
            return value
        except Exception as exc:
            error = exc
            raise
        finally:
            # Off the caller's time: on a slow Redis, ending adds two socket timeouts to a made answer.
            gevent.spawn(self.end, key, lock, error is None, error, value)

    # --- follower --------------------------------------------------------------------------------

    def relay(
        self,
        key: str,
        append: Callable[[bytes], None],
        deadline: float,
        lost: Callable[[str], bytes],
        on_end: Callable[[dict[bytes, bytes]], None] | None = None,
    ) -> bool | str | None:
        """Copy the key's stream, from its first event, into `append` until its end marker;
        return whether it ended well, None when no stream leads the key any more (it just
        ended: its answer is in the cache), or UNREACHABLE when Redis failed first (before any
        event, or READ_ATTEMPTS times in a row after some; the caller decides what its callers
        get). When the leader is gone without an end, or the deadline passes, `lost(reason)` is
        the last event. `on_end` gets the end marker's fields."""
        lock_key, counter = self._tag(key) + ":lock", self._tag(key) + ":followers"
        try:
            token: Any = self._leases.holder(lock_key)
        except redis.RedisError as exc:
            self.health.failed("stream follow", exc)
            return UNREACHABLE
        if token is None:
            return None
        events = self._events(key, token)
        self._count(counter, +1)
        try:
            last, relayed, failures = "0-0", b"", 0
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    append(lost("Timed out following an identical stream in another process"))
                    return False
                block = max(1, int(min(remaining, RELAY_BLOCK) * 1000))
                try:
                    batches: Any = self._reader.xread({events: last}, block=block, count=512)
                except redis.RedisError as exc:
                    self.health.failed("stream read", exc)
                    if self.health.starved(exc):
                        continue  # this worker was late, not Redis: the events wait there; read on
                    failures += 1
                    if not relayed or failures >= READ_ATTEMPTS:
                        return UNREACHABLE
                    gevent.sleep(RELAY_BLOCK)  # the events wait in Redis: read on from the last seen
                    continue
                failures = 0
                if not batches:
                    if not self._still_leads(lock_key, token):
                        append(lost("The identical stream in another process ended without finishing"))
                        return False
                    continue
                last, relayed, ended = _pass_on(batches[0][1], append, relayed, lost, on_end)
                if ended is not None:
                    return ended
        finally:
            self._count(counter, -1)

    def _still_leads(self, lock_key: str, token: Any) -> bool:
        """Whether the leader still holds the key's lock (True when Redis cannot tell)."""
        try:
            return bool(self._leases.holder(lock_key) == token)
        except redis.RedisError as exc:
            self.health.failed("stream lock check", exc)
            return True

    def _count(self, counter: str, delta: int) -> None:
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.incrby(counter, delta)
            pipe.pexpire(counter, self._retention_ms)
            pipe.execute()
        except redis.RedisError as exc:
            self.health.failed("stream follower count", exc)


def _discard(event: bytes) -> None:  # a JSON follower reads the channel for its end marker only
    pass


def _no_event(reason: str) -> bytes:
    return b""


def _pass_on(
    entries: list[tuple[Any, dict[bytes, bytes]]],
    append: Callable[[bytes], None],
    relayed: bytes,
    lost: Callable[[str], bytes],
    on_end: Callable[[dict[bytes, bytes]], None] | None,
) -> tuple[Any, bytes, bool | None]:
    """Pass a batch of a stream's entries on to `append`: return the last entry's id, the last
    event passed on, and whether the stream ended well (None: not ended in this batch)."""
    last: Any = None
    for last, fields in entries:
        if b"end" in fields:
            if on_end is not None:
                on_end(fields)
            ok = fields[b"end"] == END_OK
            if not ok and not relayed.startswith(b"event: error"):
                # The leader failed without publishing an error event (it was cancelled, or
                # Redis failed that event): never end on a cut text.
                append(lost("The identical stream in another process failed"))
            return last, relayed, ok
        relayed = fields[b"e"]
        append(relayed)
    return last, relayed, None
