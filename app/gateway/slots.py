"""The upstream slots: at most a limit of holders at once, given out by rank (interactive callers,
then jobs high, normal, low) and arrival. One process's (`LocalSlots`), a machine's workers' (an
SQLite file in CACHE_DIR: `SqliteSlots`) or a fleet's (Redis: `RedisSlots`); a shared slot's
hold is a lease its process renews while the call runs (app.coordination.lease.Keeper)."""

from __future__ import annotations

import heapq
import itertools
import os
import random
import sqlite3
import time
from typing import Any

import gevent
import redis
from gevent.event import Event

from app.coordination.lease import Lease
from app.localdb import LocalDB
from app.tenancy import Caller

__all__ = ["LOCAL_SCHEMA", "RANKS", "BrokenSlots", "LocalSlots", "RedisSlots", "SlotsBusy", "SqliteSlots"]

RANKS = {"interactive": 0, "high": 1, "normal": 2, "low": 3}
SCORE_BASE = 1_700_000_000.0  # seconds: arrival scores count microseconds from here (exact in a float)


def _score(caller: Caller) -> float:
    """Where a waiter stands: its rank, then its arrival (a job's submission) in microseconds."""
    since = caller.since if caller.since is not None else time.time()
    return RANKS[caller.priority] * 1e15 + round((since - SCORE_BASE) * 1e6)


class SlotsBusy(Exception):
    """No slot came free before the caller's deadline."""


class LocalSlots:
    """This process's slots: a counter and a heap of waiters by (rank and arrival, then order)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = limit
        self._waiting: list[tuple[float, int, Event]] = []
        self._arrivals = itertools.count()

    def acquire(self, caller: Caller, deadline: float | None) -> Any:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return True
        entry = (_score(caller), next(self._arrivals), Event())
        heapq.heappush(self._waiting, entry)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if entry[2].wait(timeout):
            return True
        if entry[2].is_set():  # given in the moment the wait ended
            return True
        self._waiting.remove(entry)
        heapq.heapify(self._waiting)
        raise SlotsBusy()

    def release(self, token: Any) -> None:
        if self._waiting:
            _, _, event = heapq.heappop(self._waiting)
            event.set()  # the slot passes straight to the best waiter
        else:
            self._free += 1


# KEYS: holders, waiters, seen; ARGV: me, score, limit, now, hold_until, forget_before
_ACQUIRE = """
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[4])
local gone = redis.call('zrangebyscore', KEYS[3], '-inf', ARGV[6])
for _, member in ipairs(gone) do redis.call('zrem', KEYS[2], member) redis.call('zrem', KEYS[3], member) end
redis.call('zadd', KEYS[2], 'NX', ARGV[2], ARGV[1])
redis.call('zadd', KEYS[3], ARGV[4], ARGV[1])
local free = tonumber(ARGV[3]) - redis.call('zcard', KEYS[1])
if free <= 0 then return 0 end
local rank = redis.call('zrank', KEYS[2], ARGV[1])
if rank >= free then return 0 end
redis.call('zrem', KEYS[2], ARGV[1])
redis.call('zrem', KEYS[3], ARGV[1])
redis.call('zadd', KEYS[1], ARGV[5], ARGV[1])
return 1
"""
POLL = (0.01, 0.05)  # seconds between a waiter's tries (random in this range: no lockstep)
FORGET_WAITER = 5.0  # a waiter not seen for this long left (its process died): dropped


HOLD = 15.0  # seconds a slot's hold lasts unless its holder renews it (a killed holder's comes back)


class _PolledSlots:
    """Slots shared by processes: each waiter tries (`_try`) every few milliseconds until it is
    among the best-ranked waiters and a slot is free; a holder's hold is a lease of
    `hold_seconds`, renewed by its process's keeper while the call runs (`renew`), so a killed
    process's slot comes back within one hold; a waiter not seen for FORGET_WAITER seconds is
    dropped."""

    limit: int

    def __init__(self, limit: int, hold_seconds: float) -> None:
        self.limit = limit
        self._hold = hold_seconds
        self._me = f"{os.getpid()}:{os.urandom(4).hex()}"
        self._arrivals = itertools.count()

    def _try(self, token: str, score: float, now: float) -> bool:
        raise NotImplementedError

    def _forget(self, token: str) -> None:
        raise NotImplementedError

    def renew(self, lease: Lease) -> bool:
        """Extend the hold named by `lease` (False: it ran out, and the slot went to another)."""
        raise NotImplementedError

    def hold(self, token: str) -> Lease:
        return Lease(token, token.encode(), self._hold)

    def acquire(self, caller: Caller, deadline: float | None) -> Any:
        token = f"{self._me}:{next(self._arrivals):012d}"  # ties (one microsecond) in the order asked
        score = _score(caller)
        try:
            while True:
                if self._try(token, score, time.time()):
                    return token
                if deadline is not None and time.monotonic() >= deadline:
                    raise SlotsBusy()
                gevent.sleep(random.uniform(*POLL))
        except BaseException:
            self._forget(token)
            raise


class RedisSlots(_PolledSlots):
    """The fleet's slots in Redis: sorted sets of holders (by when their hold ends), waiters
    (by rank, then arrival) and when each waiter was last seen; one Lua script per try."""

    def __init__(self, client: redis.Redis, prefix: str, limit: int, hold_seconds: float = HOLD) -> None:
        super().__init__(limit, hold_seconds)
        self._client = client
        base = f"{prefix}upstream:{{slots}}"
        self._keys = [f"{base}:holders", f"{base}:waiters", f"{base}:seen"]
        self._acquire = client.register_script(_ACQUIRE)

    def _try(self, token: str, score: float, now: float) -> bool:
        args: list[str | float] = [token, score, self.limit, now, now + self._hold, now - FORGET_WAITER]
        return bool(self._acquire(self._keys, args))

    def _forget(self, token: str) -> None:
        self._client.zrem(self._keys[1], token)
        self._client.zrem(self._keys[2], token)

    def renew(self, lease: Lease) -> bool:
        changed = self._client.zadd(self._keys[0], {lease.name: time.time() + lease.ttl}, xx=True, ch=True)
        return bool(changed)

    def release(self, token: Any) -> None:
        self._client.zrem(self._keys[0], token)


LOCAL_SCHEMA = """
create table if not exists holders (token text primary key, until real not null);
create table if not exists waiters (token text primary key, score real not null, seen real not null);
create table if not exists pause (id integer primary key check (id = 0), until real not null)
"""


class SqliteSlots(_PolledSlots):
    """One machine's slots in an SQLite file beside the cache (every worker of the instance
    shares them): the same rule as RedisSlots, one transaction per try."""

    def __init__(self, db: LocalDB, limit: int, hold_seconds: float = HOLD) -> None:
        super().__init__(limit, hold_seconds)
        self._db = db

    def _try(self, token: str, score: float, now: float) -> bool:
        return self._db.run(self._try_in, token, score, now)

    def _try_in(self, conn: sqlite3.Connection, token: str, score: float, now: float) -> bool:
        """On the database thread, in one transaction."""
        conn.execute("delete from holders where until <= ?", (now,))
        conn.execute("delete from waiters where seen <= ?", (now - FORGET_WAITER,))
        conn.execute(
            "insert into waiters (token, score, seen) values (?, ?, ?)"
            " on conflict (token) do update set seen = excluded.seen",
            (token, score, now),
        )
        free = self.limit - conn.execute("select count(*) from holders").fetchone()[0]
        if free <= 0:
            return False
        ahead = conn.execute(
            "select count(*) from waiters where score < ? or (score = ? and token < ?)", (score, score, token)
        ).fetchone()[0]
        if ahead >= free:
            return False
        conn.execute("delete from waiters where token = ?", (token,))
        conn.execute("insert into holders (token, until) values (?, ?)", (token, now + self._hold))
        return True

    def _forget(self, token: str) -> None:
        self._db.execute("delete from waiters where token = ?", (token,))

    def renew(self, lease: Lease) -> bool:
        now = time.time()
        changed = self._db.execute(
            "update holders set until = ? where token = ? and until > ?", (now + lease.ttl, lease.name, now)
        ).rowcount
        return bool(changed)

    def release(self, token: Any) -> None:
        self._db.execute("delete from holders where token = ?", (token,))


class BrokenSlots:
    """The machine's slots when their file could not be opened: nothing can be counted, so
    nothing is admitted (a cap that fails open let 50 calls at a model capped at 5)."""

    def __init__(self, limit: int, why: str) -> None:
        self.limit = limit
        self.why = why

    def acquire(self, caller: Caller, deadline: float | None) -> Any:
        raise sqlite3.OperationalError(self.why)

    def release(self, token: Any) -> None:  # never given a slot
        raise AssertionError("a broken store gives no slots")
