"""Cross-process coalescing through Redis: a lease lock (redis-py's Lock: SET NX PX with a token,
token-checked release and extend) elects one leader per key across all workers and instances;
the live leader renews its lease; followers learn the outcome by pub/sub, not by polling."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import gevent
import redis
from gevent import Timeout
from gevent.event import AsyncResult
from redis.lock import Lock

from app.cache.memory import CachedValue
from app.cache.redis import RedisCache, RedisHealth
from app.errors import APIError, GatewayTimeoutError, error_from_wire, error_to_wire

__all__ = ["RedisCoalescer"]

log = logging.getLogger(__name__)


def _decode(message: bytes) -> CachedValue | APIError | None:
    """A leader's message: b"1" + the answer (CachedValue's one encoding), or b"0" + its error."""
    if message[:1] == b"1":
        return CachedValue.decode(message[1:])
    return error_from_wire(json.loads(message[1:]))


def _tagged(key: str) -> str:
    """The key as a Redis Cluster hash tag: every Redis key of one call lives in one slot."""
    return "{" + key + "}"


class RedisCoalescer:
    """One upstream call per key across processes. Redis trouble never fails a request: the
    caller then runs the call itself (the per-worker InFlight still dedupes inside a worker)."""

    def __init__(
        self,
        client: redis.Redis,
        listener_client: redis.Redis,
        prefix: str,
        lease_seconds: float,
        l2: RedisCache,
        health: RedisHealth,
        on_wait: Callable[[int], None] | None = None,
    ) -> None:
        self._client = client
        # Locks are renewed and released even while Redis is paused after a failure.
        self._locks: redis.Redis = getattr(client, "plain", client)
        self._listener_client = listener_client
        self._lock_prefix = f"{prefix}lock:"  # + "{key}": the hash tag puts a call's lock and answer in one slot
        self._channel_prefix = f"{prefix}done:"
        self._lease = lease_seconds
        self._l2 = l2
        self.health = health
        self._on_wait = on_wait or (lambda _delta: None)
        self._waiters: dict[str, list[AsyncResult]] = {}
        self._listener: gevent.Greenlet | None = None

    # --- public --------------------------------------------------------------------------------

    def run(self, key: str, call: Callable[[], CachedValue], timeout: float) -> tuple[CachedValue, bool]:
        """Return (value, coalesced); raise the leader's error when another process led."""
        end = time.monotonic() + timeout
        while True:
            if not self.health.available():  # Redis failed a moment ago: coalesce in this worker only
                return call(), False
            # thread_local=False: the lease heartbeat, another greenlet, must see the token.
            lock = self._locks.lock(self._lock_prefix + _tagged(key), timeout=self._lease, thread_local=False)
            try:
                leader = lock.acquire(blocking=False)
            except redis.RedisError as exc:
                self.health.failed("coalescing lock", exc)
                return call(), False
            if leader:
                return self._lead(key, lock, call), False
            outcome = self._follow(key, end)
            if outcome is not None:
                if isinstance(outcome, APIError):
                    raise outcome
                return outcome, True
            # The lock vanished with no result (leader died or Redis hiccup): try to lead.

    # --- leader --------------------------------------------------------------------------------

    def _lead(self, key: str, lock: Lock, call: Callable[[], CachedValue]) -> CachedValue:
        heartbeat = gevent.spawn(self._keep_lease, lock)
        message: bytes | None = None
        try:
            value = call()
        except Exception as exc:
            message = b"0" + json.dumps(error_to_wire(exc)).encode()
            raise
        else:
            message = b"1" + value.encode()
            return value
        finally:
            heartbeat.kill(block=False)
            # Off the caller's time: on a slow Redis, publishing and unlocking would add up to
            # two socket timeouts to an answer that is already made.
            gevent.spawn(self._hand_over, key, lock, message)

    def _hand_over(self, key: str, lock: Lock, message: bytes | None) -> None:
        """Tell the followers the outcome, then let go of the lead."""
        if message is not None:
            self._publish(key, message)
        try:
            lock.release()
        except redis.exceptions.LockError:
            pass  # the lease ran out (Redis was unreachable too long): another may lead now
        except redis.RedisError as exc:
            self.health.failed("coalescing unlock", exc)

    def _keep_lease(self, lock: Lock) -> None:
        # A live leader keeps its lease; a dead one loses it within one lease period.
        while True:
            gevent.sleep(self._lease / 3)
            try:
                lock.reacquire()
            except redis.exceptions.LockError:
                return  # no longer ours: nothing left to keep
            except redis.RedisError as exc:
                self.health.failed("coalescing lease", exc)

    def _publish(self, key: str, message: bytes) -> None:
        try:
            self._client.publish(self._channel_prefix + key, message)
        except redis.RedisError as exc:
            self.health.failed("coalescing publish", exc)

    # --- follower ------------------------------------------------------------------------------

    def _follow(self, key: str, end: float) -> CachedValue | APIError | None:
        waiter: AsyncResult = AsyncResult()
        try:
            self._ensure_listener()
        except redis.RedisError as exc:
            self.health.failed("coalescing subscribe", exc)
            waiter = None  # type: ignore[assignment]
        if waiter is not None:
            self._waiters.setdefault(key, []).append(waiter)
        self._on_wait(1)
        try:
            # Subscribed first, then look: a leader that finished in between left its answer in L2.
            cached = self._l2.get(key)
            if cached is not None:
                return cached
            check_every = max(0.05, self._lease / 3)
            while True:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    raise GatewayTimeoutError("Timed out waiting for an identical request in flight")
                try:
                    if waiter is None:
                        gevent.sleep(min(remaining, check_every))
                        raise Timeout
                    return _decode(waiter.get(timeout=min(remaining, check_every)))
                except Timeout:
                    if not self._lock_held(key):
                        return self._l2.get(key)
        finally:
            self._on_wait(-1)
            if waiter is not None:
                waiters = self._waiters.get(key, [])
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters:
                    self._waiters.pop(key, None)

    def _lock_held(self, key: str) -> bool:
        try:
            return bool(self._client.exists(self._lock_prefix + _tagged(key)))
        except redis.RedisError as exc:
            self.health.failed("coalescing lock check", exc)
            return False

    def _ensure_listener(self) -> None:
        if self._listener is not None and not self._listener.dead:
            return
        pubsub = self._listener_client.pubsub()
        pubsub.psubscribe(self._channel_prefix + "*")
        # Wait for the confirmation so that nothing published after this point is missed.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.1)
            if message and message["type"] == "psubscribe":
                break
        else:
            pubsub.close()
            raise redis.ConnectionError("no psubscribe confirmation")
        self._listener = gevent.spawn(self._listen, pubsub)

    def _listen(self, pubsub: Any) -> None:
        skip = len(self._channel_prefix)
        try:
            for message in pubsub.listen():
                if message["type"] != "pmessage":
                    continue
                key = message["channel"][skip:].decode()
                for waiter in self._waiters.get(key, ()):
                    waiter.set(message["data"])
        except redis.RedisError as exc:
            self.health.failed("coalescing listener", exc)
        finally:
            pubsub.close()
