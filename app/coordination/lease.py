"""A lease: one holder of a name at a time, until it lets go or its lease runs out. What makes
one process lead a key's call (coalescing) and what brings a dead holder's share back.

`acquire(name, ttl, token)` takes the name when it is free, or when `token` holds it already (a
retry after a reply that came too late on a busy machine: it may have taken the lease, and
asking again must not make a second leader); `renew` extends it only for its holder; `release`
lets go only of the holder's own lease (one that ran out and was taken since stays with its new
holder) and wakes whoever waits; `wait(name, deadline)` returns once the name is free — woken by
the release where the store can notify (Redis pub/sub; a process's own greenlets), else by
looking again at most every POLL seconds, and never later than the lease's own expiry.
`Keeper` renews the leases a process holds, in one greenlet, until they are released.

Three stores, one contract (tests/unit/coordination/test_lease.py runs it on each):
`RedisLeases` (a fleet: one script per step), `SqliteLeases` (one machine's workers: one
transaction per step) and `MemoryLeases` (one process).
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Protocol

import gevent
import redis
from gevent.event import Event

from app.localdb import LocalDB

__all__ = ["Keeper", "Lease", "Leases", "MemoryLeases", "RedisLeases", "Renews", "SqliteLeases", "new_token"]

POLL = 0.05  # seconds between looks of a waiter whose store cannot notify it


def new_token() -> bytes:
    return os.urandom(16).hex().encode()


@dataclass(frozen=True, slots=True)
class Lease:
    name: str
    token: bytes
    ttl: float  # seconds each acquire or renewal gives


class Renews(Protocol):
    def renew(self, lease: Lease) -> bool: ...


class Leases(Renews, Protocol):
    def acquire(self, name: str, ttl: float, token: bytes | None = None) -> Lease | None: ...
    def release(self, lease: Lease) -> bool: ...
    def holder(self, name: str) -> bytes | None: ...
    def wait(self, name: str, deadline: float) -> bool: ...


# KEYS: the lease; ARGV: token, ttl (ms)
_ACQUIRE = """
local held = redis.call('get', KEYS[1])
if held == false then redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
if held == ARGV[1] then redis.call('pexpire', KEYS[1], ARGV[2]) return 1 end
return 0
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS: the lease, its release channel; ARGV: token
_RELEASE = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('del', KEYS[1])
redis.call('publish', KEYS[2], ARGV[1])
return 1
"""


class RedisLeases:
    """Leases in Redis: the name is the key (callers give it a hash tag for a Cluster), its value
    the holder's token, its expiry the lease's; a release is published on `<name>:released`."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self, name: str, ttl: float, token: bytes | None = None) -> Lease | None:
        lease = Lease(name, token or new_token(), ttl)
        return lease if self._acquire([name], [lease.token, _ms(ttl)]) else None

    def renew(self, lease: Lease) -> bool:
        return bool(self._renew([lease.name], [lease.token, _ms(lease.ttl)]))

    def release(self, lease: Lease) -> bool:
        return bool(self._release([lease.name, lease.name + ":released"], [lease.token]))

    def holder(self, name: str) -> bytes | None:
        return self._client.get(name)  # type: ignore[return-value]

    def wait(self, name: str, deadline: float) -> bool:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(name + ":released")  # before looking: a release after the look wakes it
            while True:
                left_ms = self._client.pttl(name)
                if not isinstance(left_ms, int) or left_ms < 0:  # -2: gone (-1 cannot be: leases expire)
                    return True
                now = time.monotonic()
                if now >= deadline:
                    return False
                pubsub.get_message(timeout=min(deadline - now, left_ms / 1000 + 0.001))
        finally:
            pubsub.close()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class _Notifying:
    """Waking the waiters of one process: an Event per name being waited for."""

    def __init__(self) -> None:
        self._released: dict[str, Event] = {}

    def _wake(self, name: str) -> None:
        event = self._released.pop(name, None)
        if event is not None:
            event.set()

    def _wait(self, name: str, deadline: float, left: Any, poll: float | None) -> bool:
        while True:
            remaining = left(name)
            if remaining is None:
                return True
            now = time.monotonic()
            if now >= deadline:
                return False
            event = self._released.setdefault(name, Event())
            timeout = min(deadline - now, remaining + 0.001, poll if poll is not None else remaining + 0.001)
            event.wait(timeout)


class MemoryLeases(_Notifying):
    """One process's leases (no Redis and no CACHE_DIR)."""

    def __init__(self) -> None:
        super().__init__()
        self._held: dict[str, tuple[bytes, float]] = {}  # name → (token, expires, monotonic)

    def _live(self, name: str) -> tuple[bytes, float] | None:
        found = self._held.get(name)
        if found is not None and found[1] <= time.monotonic():
            del self._held[name]
            return None
        return found

    def acquire(self, name: str, ttl: float, token: bytes | None = None) -> Lease | None:
        lease = Lease(name, token or new_token(), ttl)
        found = self._live(name)
        if found is not None and found[0] != lease.token:
            return None
        self._held[name] = (lease.token, time.monotonic() + ttl)
        return lease

    def renew(self, lease: Lease) -> bool:
        found = self._live(lease.name)
        if found is None or found[0] != lease.token:
            return False
        self._held[lease.name] = (lease.token, time.monotonic() + lease.ttl)
        return True

    def release(self, lease: Lease) -> bool:
        found = self._live(lease.name)
        if found is None or found[0] != lease.token:
            return False
        del self._held[lease.name]
        self._wake(lease.name)
        return True

    def holder(self, name: str) -> bytes | None:
        found = self._live(name)
        return found[0] if found is not None else None

    def wait(self, name: str, deadline: float) -> bool:
        def left(key: str) -> float | None:
            found = self._live(key)
            return None if found is None else found[1] - time.monotonic()

        return self._wait(name, deadline, left, None)


LEASE_SCHEMA = "create table if not exists leases (name text primary key, token blob not null, expires real not null)"


class SqliteLeases(_Notifying):
    """One machine's leases in an SQLite file every worker shares. Another process's release
    cannot wake this one's waiters: they look again every POLL seconds (this process's own
    releases wake them at once)."""

    def __init__(self, db: LocalDB) -> None:
        super().__init__()
        self._db = db
        db.create(LEASE_SCHEMA)

    def acquire(self, name: str, ttl: float, token: bytes | None = None) -> Lease | None:
        lease = Lease(name, token or new_token(), ttl)
        return lease if self._db.run(_sql_acquire, lease, time.time()) else None

    def renew(self, lease: Lease) -> bool:
        now = time.time()
        changed = self._db.execute(
            "update leases set expires = ? where name = ? and token = ? and expires > ?",
            (now + lease.ttl, lease.name, lease.token, now),
        ).rowcount
        return bool(changed)

    def release(self, lease: Lease) -> bool:
        gone = self._db.execute(
            "delete from leases where name = ? and token = ? and expires > ?", (lease.name, lease.token, time.time())
        ).rowcount
        if gone:
            self._wake(lease.name)
        return bool(gone)

    def _left(self, name: str) -> float | None:
        now = time.time()
        row = self._db.execute("select expires from leases where name = ? and expires > ?", (name, now)).fetchone()
        return None if row is None else row[0] - now

    def holder(self, name: str) -> bytes | None:
        row = self._db.execute(
            "select token from leases where name = ? and expires > ?", (name, time.time())
        ).fetchone()
        return bytes(row[0]) if row is not None else None

    def wait(self, name: str, deadline: float) -> bool:
        return self._wait(name, deadline, self._left, POLL)


def _sql_acquire(conn: sqlite3.Connection, lease: Lease, now: float) -> bool:
    conn.execute("delete from leases where name = ? and expires <= ?", (lease.name, now))
    row = conn.execute("select token from leases where name = ?", (lease.name,)).fetchone()
    if row is not None and bytes(row[0]) != lease.token:
        return False
    conn.execute(
        "insert into leases (name, token, expires) values (?, ?, ?)"
        " on conflict (name) do update set expires = excluded.expires",
        (lease.name, lease.token, now + lease.ttl),
    )
    return True


class Keeper:
    """Renews every lease this process holds, in one greenlet, each a third of its time after
    the last, until it is dropped; `lost(lease)` is told of a lease that could not be renewed
    because it is no longer its holder's (an error of the store is tried again next round)."""

    def __init__(self, leases: Renews, on_error: Any = None) -> None:
        self._leases = leases
        self._held: dict[tuple[str, bytes], list[Any]] = {}  # → [lease, lost, when due]
        self._on_error = on_error or (lambda exc: None)
        self._greenlet: gevent.Greenlet | None = None
        self._changed = Event()

    def keep(self, lease: Lease, lost: Any = None) -> None:
        self._held[(lease.name, lease.token)] = [lease, lost, time.monotonic() + lease.ttl / 3]
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._run)
        self._changed.set()

    def drop(self, lease: Lease) -> None:
        self._held.pop((lease.name, lease.token), None)

    def __len__(self) -> int:
        return len(self._held)

    def _run(self) -> None:
        while self._held:
            now = time.monotonic()
            due = min(entry[2] for entry in self._held.values())
            if due > now:
                self._changed.clear()
                self._changed.wait(due - now)
                continue
            for key, entry in list(self._held.items()):
                if entry[2] <= now:
                    entry[2] = now + entry[0].ttl / 3
                    self._renew(key, entry[0], entry[1])

    def _renew(self, key: tuple[str, bytes], lease: Lease, lost: Any) -> None:
        try:
            kept = self._leases.renew(lease)
        except Exception as exc:  # the store failed: tried again next round
            self._on_error(exc)
            return
        if not kept and self._held.pop(key, None) is not None and lost is not None:
            lost(lease)
