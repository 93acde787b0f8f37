"""One upstream budget: at most UPSTREAM_MAX_CONCURRENCY model calls in flight, given out in
priority order, and a pause of every new call while the model API has said 429 Retry-After.

Who waits for a slot is ranked: synchronous and streaming callers first (within their
deadline, then 503 with Retry-After), then jobs `high`, `normal`, `low`; first come first
served within a rank. With Redis the slots and the pause are the fleet's (a sorted set of
holders, one of waiters, and a key holding when the pause ends); without it the instance's, in
an SQLite file in CACHE_DIR that its workers share (the same rule, one transaction per try);
with neither, this process's.

A caller's rank is its Caller's (app.tenancy): a job's priority and submission, or interactive.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import gevent
import redis
from gevent.event import Event

from app.coordination.lease import Keeper, Lease
from app.errors import ServiceUnavailableError
from app.localdb import LocalDB
from app.tenancy import Caller

__all__ = [
    "LOCAL_SCHEMA",
    "RANKS",
    "BrokenSlots",
    "Budget",
    "LocalSlots",
    "RedisSlots",
    "SqliteSlots",
]

log = logging.getLogger(__name__)

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
# The shared slots or pause out of reach: a slot is refused (503), a pause is not waited for.
_STORE_ERRORS = (redis.RedisError, sqlite3.Error, OSError)
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


class _LocalPause:
    def __init__(self) -> None:
        self._until = 0.0

    def until(self) -> float:
        return self._until

    def pause(self, until: float) -> None:
        self._until = max(self._until, until)


READ_EVERY = 0.1  # seconds a process trusts its last read of the fleet's pause (one GET per burst)


class _SqlitePause:
    def __init__(self, db: LocalDB) -> None:
        self._db = db
        self._until, self._read_at = 0.0, -READ_EVERY

    def until(self) -> float:
        now = time.monotonic()
        if now >= self._read_at + READ_EVERY:
            row = self._db.execute("select until from pause where id = 0").fetchone()
            self._until, self._read_at = (row[0] if row else 0.0), now
        return self._until

    def pause(self, until: float) -> None:
        self._db.execute(
            "insert into pause (id, until) values (0, ?)"
            " on conflict (id) do update set until = max(until, excluded.until)",
            (until,),
        )
        self._until = max(self._until, until)


# KEYS: pause; ARGV: until (ms since the epoch)
_PAUSE = """
local current = tonumber(redis.call('get', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then redis.call('set', KEYS[1], ARGV[1], 'PXAT', ARGV[1]) end
"""


class _RedisPause:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._key = f"{prefix}upstream:pause"
        self._set = client.register_script(_PAUSE)
        self._until, self._read_at = 0.0, -READ_EVERY

    def until(self) -> float:
        """When the fleet's pause ends (read at most every READ_EVERY seconds per process)."""
        now = time.monotonic()
        if now >= self._read_at + READ_EVERY:
            raw = self._client.get(self._key)
            self._until, self._read_at = (int(raw) / 1000 if raw else 0.0), now  # type: ignore[arg-type]
        return self._until

    def pause(self, until: float) -> None:
        self._set([self._key], [int(until * 1000)])
        self._until = max(self._until, until)


class Budget:
    """The slots (None: unlimited) and the pause, as the upstream caller uses them."""

    def __init__(
        self,
        slots: LocalSlots | RedisSlots | SqliteSlots | BrokenSlots | None,
        client: redis.Redis | None = None,
        prefix: str = "",
        on_change: Callable[[int, bool], None] | None = None,
        local: LocalDB | None = None,
    ) -> None:
        self._slots = slots
        self._local = local
        self._pause: _LocalPause | _RedisPause | _SqlitePause = (
            _RedisPause(client, prefix)
            if client is not None
            else _SqlitePause(local)
            if local is not None
            else _LocalPause()
        )
        self._health = getattr(client, "health", None)  # a pausing client's: told of each failure
        self._on_change = on_change or (lambda in_use, paused: None)
        self._held = 0  # slots this process holds
        # Shared holds are leases: renewed while their calls run, by one greenlet per process.
        self._keeper = (
            Keeper(slots, on_error=lambda exc: self._failed("upstream slot renewal", exc))
            if isinstance(slots, _PolledSlots)
            else None
        )
        self._paused = False  # as this process last saw the pause

    @classmethod
    def build(
        cls,
        limit: int,
        client: redis.Redis | None,
        prefix: str,
        on_change: Callable[[int, bool], None] | None = None,
        local: LocalDB | None = None,
        broken: str | None = None,
    ) -> Budget:
        """The fleet's budget with Redis (`client`); without it the machine's, in the SQLite
        file `local` (every worker of the instance shares it); without either, this worker's.
        `broken`: why the machine's file could not be opened — the cap cannot be counted, so
        every call is refused until the instance restarts with a working CACHE_DIR."""
        slots: LocalSlots | RedisSlots | SqliteSlots | BrokenSlots | None = None
        if limit:
            if client is not None:
                slots = RedisSlots(client, prefix, limit)
            elif broken is not None:
                slots = BrokenSlots(limit, broken)
            elif local is not None:
                slots = SqliteSlots(local, limit)
            else:
                slots = LocalSlots(limit)
        return cls(slots, client, prefix, on_change, local)

    @property
    def limit(self) -> int:
        return self._slots.limit if self._slots is not None else 0

    def readiness(self) -> dict[str, object] | None:
        """For /health/ready, with a cap: a store that cannot count fails readiness (every
        model call of this instance is refused until it is fixed and the instance restarted)."""
        if self._slots is None:
            return None
        broken = self._slots.why if isinstance(self._slots, BrokenSlots) else getattr(self._local, "broken", None)
        if broken is not None:
            return {"status": "fail", "limit": self.limit, "error": broken}
        return {"status": "ok", "limit": self.limit, "inUse": self._held}

    def _failed(self, operation: str, exc: Exception) -> None:
        if self._health is not None and isinstance(exc, redis.RedisError):
            self._health.failed(operation, exc)  # counted, logged, and Redis left alone a moment
        else:
            store = "redis" if isinstance(exc, redis.RedisError) else "the machine's budget file"
            log.warning("%s unavailable during %s: %s: %s", store, operation, type(exc).__name__, exc)

    def pause(self, seconds: float) -> None:
        """The model API said 429 Retry-After `seconds`: no new call anywhere until then."""
        try:
            self._pause.pause(time.time() + seconds)
        except _STORE_ERRORS as exc:
            self._failed("upstream pause", exc)
        self._paused = True
        self._on_change(self._held, True)

    def wait_unpaused(self, deadline: float | None) -> None:
        """Return once no pause holds; an interactive caller whose deadline comes first gets
        503 with the pause's Retry-After."""
        while True:
            try:
                until = self._pause.until()
            except _STORE_ERRORS as exc:
                self._failed("upstream pause", exc)
                return  # the pause cannot be read: calls go on (the provider's 429 still stops them)
            left = until - time.time()
            if left <= 0:
                if self._paused:
                    self._paused = False
                    self._on_change(self._held, self._paused)
                return
            if deadline is not None and time.monotonic() + left >= deadline:
                raise ServiceUnavailableError("Upstream model API rate limit reached", retry_after=left)
            self._paused = True
            self._on_change(self._held, True)
            gevent.sleep(min(left, 1.0))

    @contextmanager
    def slot(self, caller: Caller, timeout: float, deadline: float | None = None) -> Iterator[float]:
        """Hold one upstream slot (waiting in the caller's rank) with no pause in force, and
        yield the call's deadline (monotonic). An interactive caller's deadline is `deadline`
        (default: `timeout` from now) and bounds its wait too; a job waits as long as it takes,
        and its call gets `timeout` from when it got the slot."""
        interactive = caller.interactive
        if interactive and deadline is None:
            deadline = time.monotonic() + timeout
        self.wait_unpaused(deadline if interactive else None)
        token = None
        if self._slots is not None:
            try:
                token = self._slots.acquire(caller, deadline if interactive else None)
            except SlotsBusy:
                raise ServiceUnavailableError(
                    "Upstream model API busy",
                    details="every upstream slot is in use; retry after Retry-After seconds",
                    retry_after=1.0,
                ) from None
            except _STORE_ERRORS as exc:
                self._failed("upstream slot", exc)
                raise ServiceUnavailableError(
                    "Upstream budget unavailable",
                    details="the upstream concurrency cap cannot be counted now; retry after Retry-After seconds",
                    retry_after=2.0,
                ) from None
        self._held += 1
        self._on_change(self._held, self._paused)
        hold = self._slots.hold(token) if isinstance(self._slots, _PolledSlots) and token is not None else None
        if hold is not None and self._keeper is not None:
            self._keeper.keep(hold)
        try:
            yield deadline if interactive and deadline is not None else time.monotonic() + timeout
        finally:
            self._held -= 1
            if hold is not None and self._keeper is not None:
                self._keeper.drop(hold)
            if token is not None and self._slots is not None:
                try:
                    self._slots.release(token)
                except _STORE_ERRORS as exc:
                    self._failed("upstream slot release", exc)  # the hold ends by itself
            self._on_change(self._held, self._paused)
