"""A counted reservation: reserve an amount against a limit for a while, settle it with the
amount actually used, or release it. What holds the budgets (per-key tokens and cost) exact
across processes.

Each counter (one key's tokens for one day, say) keeps `used` and the live reservations, each
with its holder's id, amount and expiry. `reserve` admits a holder only when, for every counter
it names, `used + reserved + amount <= limit` — all or none, in one atomic step — and returns
which counter had no room otherwise. A reservation ends when it is settled or released, or when
it expires: a holder that died (its worker SIGKILLed) gives its amount back when its expiry
passes, never at the end of the period. Settling twice counts once.

Three stores, one contract (tests/unit/coordination/test_reservation.py runs it on each):
`RedisReservations` (a fleet: one Lua script per step), `SqliteReservations` (the workers of
one machine: one transaction per step, in CACHE_DIR) and `MemoryReservations` (one process).
A store that cannot answer raises `StoreUnavailable`; its callers refuse (fail closed).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from app.localdb import LocalDB

__all__ = [
    "Claim",
    "MemoryReservations",
    "RedisReservations",
    "Reservations",
    "SqliteReservations",
    "StoreUnavailable",
]


SETTLED_FOR = 3600.0  # seconds a settled holder is remembered: a settlement retried within it counts once


class StoreUnavailable(Exception):
    """The store cannot answer: nothing is known to be counted, so nothing may be admitted."""


@dataclass(frozen=True, slots=True)
class Claim:
    """One counter's share of a reservation: reserve `amount` of `counter`, limited to `limit`."""

    counter: str
    limit: float
    amount: float


class Reservations(Protocol):
    def reserve(self, holder: str, claims: Sequence[Claim], expires_at: float, keep: float) -> int | None:
        """Reserve every claim for `holder` until `expires_at` (epoch seconds), or none of them:
        None when reserved, else the index of the first claim with no room. Counters are kept
        `keep` seconds after their last change."""

    def settle(self, holder: str, used: Sequence[tuple[str, float]], keep: float) -> list[float]:
        """End `holder`'s reservation on each counter and add what it used; return each
        counter's `used` after. A holder settled before (or whose reservation expired) still
        adds its use once, never twice."""

    def usage(self, counter: str) -> tuple[float, float]:
        """(used, reserved by live holders) of `counter`."""


def _redis_errors(fn: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc

    return call


# Per counter K: hash K (used, reserved), zset K:held (holder -> expiry), hash K:amounts
# (holder -> amount), zset K:settled (holders settled -> when; kept SETTLED_FOR seconds).
# Reserve: KEYS the counters; ARGV now, n, holder, expires, keep, then limit and amount per
# counter. Returns 0 when reserved, else the index (1-based) of the first counter without room.
_PURGE = """
local function purge(k, now)
  local gone = redis.call('zrangebyscore', k .. ':held', '-inf', now)
  for _, holder in ipairs(gone) do
    local amount = tonumber(redis.call('hget', k .. ':amounts', holder) or '0')
    redis.call('hincrbyfloat', k, 'reserved', -amount)
    redis.call('hdel', k .. ':amounts', holder)
    redis.call('zrem', k .. ':held', holder)
  end
end
local function keep(k, seconds)
  for _, name in ipairs({k, k .. ':held', k .. ':amounts', k .. ':settled'}) do
    redis.call('expire', name, seconds)
  end
end
"""
_RESERVE = (
    _PURGE
    + """
local now, n, holder, expires, seconds = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
for i = 1, n do
  local k = KEYS[i]
  purge(k, now)
  local used = tonumber(redis.call('hget', k, 'used') or '0')
  local reserved = tonumber(redis.call('hget', k, 'reserved') or '0')
  local limit, amount = tonumber(ARGV[4 + 2 * i]), tonumber(ARGV[5 + 2 * i])
  if used + reserved + amount > limit then return i end
end
for i = 1, n do
  local k = KEYS[i]
  local amount = ARGV[5 + 2 * i]
  redis.call('zadd', k .. ':held', expires, holder)
  redis.call('hset', k .. ':amounts', holder, amount)
  redis.call('hincrbyfloat', k, 'reserved', amount)
  keep(k, seconds)
end
return 0
"""
)
# KEYS: the counters; ARGV: now, holder, keep, settled_for, then the amount used per counter.
# Returns each counter's used after.
_SETTLE = (
    _PURGE
    + """
local now, holder, seconds = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local out = {}
for i = 1, #KEYS do
  local k = KEYS[i]
  purge(k, now)
  local amount = redis.call('hget', k .. ':amounts', holder)
  if amount then
    redis.call('hincrbyfloat', k, 'reserved', -tonumber(amount))
    redis.call('hdel', k .. ':amounts', holder)
    redis.call('zrem', k .. ':held', holder)
  end
  redis.call('zremrangebyscore', k .. ':settled', '-inf', now - tonumber(ARGV[4]))
  if redis.call('zadd', k .. ':settled', 'NX', now, holder) == 1 then
    redis.call('hincrbyfloat', k, 'used', ARGV[4 + i])
  end
  keep(k, seconds)
  out[i] = redis.call('hget', k, 'used') or '0'
end
return out
"""
)


class RedisReservations:
    """The fleet's counters in Redis. Counters of one reservation must share a hash slot in a
    Cluster (name them with one `{tag}`)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)

    @_redis_errors
    def reserve(self, holder: str, claims: Sequence[Claim], expires_at: float, keep: float) -> int | None:
        args: list[Any] = [time.time(), len(claims), holder, expires_at, int(keep)]
        for claim in claims:
            args += [claim.limit, claim.amount]
        refused = int(self._reserve([c.counter for c in claims], args))
        return refused - 1 if refused else None

    @_redis_errors
    def settle(self, holder: str, used: Sequence[tuple[str, float]], keep: float) -> list[float]:
        args: list[Any] = [time.time(), holder, int(keep), SETTLED_FOR, *(amount for _, amount in used)]
        return [float(x) for x in self._settle([counter for counter, _ in used], args)]

    @_redis_errors
    def usage(self, counter: str) -> tuple[float, float]:
        used, reserved = self._client.hmget(counter, "used", "reserved")
        return float(used or 0.0), max(0.0, float(reserved or 0.0))


_SCHEMA = """
create table if not exists counters (counter text primary key, used real not null, until real not null);
create table if not exists holds (
  counter text not null, holder text not null, amount real not null, expires real not null,
  primary key (counter, holder));
create table if not exists settled (counter text not null, holder text not null, until real not null,
  primary key (counter, holder))
"""


class SqliteReservations:
    """The machine's counters in an SQLite file every worker of the instance shares."""

    def __init__(self, db: LocalDB) -> None:
        self._db = self.db = db
        try:
            db.create(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"{db.path}: {type(exc).__name__}: {exc}") from exc

    def _run(self, step: Any, *args: Any) -> Any:
        try:
            return self._db.run(_expire_then, step, args)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"{self._db.path}: {type(exc).__name__}: {exc}") from exc

    def reserve(self, holder: str, claims: Sequence[Claim], expires_at: float, keep: float) -> int | None:
        return self._run(self._reserve, holder, claims, expires_at, keep)  # type: ignore[no-any-return]

    @staticmethod
    def _reserve(
        conn: sqlite3.Connection, now: float, holder: str, claims: Sequence[Claim], expires: float, keep: float
    ) -> int | None:
        for index, claim in enumerate(claims):
            used, reserved = _usage(conn, claim.counter)
            if used + reserved + claim.amount > claim.limit:
                return index
        for claim in claims:
            conn.execute(
                "insert or replace into holds (counter, holder, amount, expires) values (?, ?, ?, ?)",
                (claim.counter, holder, claim.amount, expires),
            )
            _keep(conn, claim.counter, now + keep)
        return None

    def settle(self, holder: str, used: Sequence[tuple[str, float]], keep: float) -> list[float]:
        return self._run(self._settle, holder, used, keep)  # type: ignore[no-any-return]

    @staticmethod
    def _settle(
        conn: sqlite3.Connection, now: float, holder: str, used: Sequence[tuple[str, float]], keep: float
    ) -> list[float]:
        totals = []
        for counter, amount in used:
            conn.execute("delete from holds where counter = ? and holder = ?", (counter, holder))
            first = conn.execute(
                "insert or ignore into settled (counter, holder, until) values (?, ?, ?)",
                (counter, holder, now + SETTLED_FOR),
            ).rowcount
            _keep(conn, counter, now + keep)
            if first:
                conn.execute("update counters set used = used + ? where counter = ?", (amount, counter))
            totals.append(_usage(conn, counter)[0])
        return totals

    def usage(self, counter: str) -> tuple[float, float]:
        return self._run(lambda conn, now: _usage(conn, counter))  # type: ignore[no-any-return]


def _expire_then(conn: sqlite3.Connection, step: Any, args: tuple[Any, ...]) -> Any:
    """On the database thread: forget what has expired, then `step(conn, now, *args)`."""
    now = time.time()
    conn.execute("delete from holds where expires <= ?", (now,))
    conn.execute("delete from counters where until <= ?", (now,))
    conn.execute("delete from settled where until <= ?", (now,))
    return step(conn, now, *args)


def _usage(conn: sqlite3.Connection, counter: str) -> tuple[float, float]:
    row = conn.execute("select used from counters where counter = ?", (counter,)).fetchone()
    reserved = conn.execute("select coalesce(sum(amount), 0) from holds where counter = ?", (counter,)).fetchone()
    return (float(row[0]) if row else 0.0), float(reserved[0])


def _keep(conn: sqlite3.Connection, counter: str, until: float) -> None:
    conn.execute(
        "insert into counters (counter, used, until) values (?, 0, ?)"
        " on conflict (counter) do update set until = max(until, excluded.until)",
        (counter, until),
    )


class MemoryReservations:
    """One process's counters (no Redis and no CACHE_DIR): exact for this process only."""

    def __init__(self) -> None:
        self._used: dict[str, float] = {}
        self._holds: dict[str, dict[str, tuple[float, float]]] = {}  # counter -> holder -> (amount, expires)
        self._settled: dict[tuple[str, str], float] = {}  # (counter, holder) -> when settled

    def _reserved(self, counter: str, now: float) -> float:
        holds = self._holds.setdefault(counter, {})
        for holder in [h for h, (_, expires) in holds.items() if expires <= now]:
            del holds[holder]
        return sum(amount for amount, _ in holds.values())

    def reserve(self, holder: str, claims: Sequence[Claim], expires_at: float, keep: float) -> int | None:
        now = time.time()
        for index, claim in enumerate(claims):
            if self._used.get(claim.counter, 0.0) + self._reserved(claim.counter, now) + claim.amount > claim.limit:
                return index
        for claim in claims:
            self._holds[claim.counter][holder] = (claim.amount, expires_at)
        return None

    def settle(self, holder: str, used: Sequence[tuple[str, float]], keep: float) -> list[float]:
        now = time.time()
        if len(self._settled) > 10_000:
            self._settled = {k: t for k, t in self._settled.items() if t > now - SETTLED_FOR}
        totals = []
        for counter, amount in used:
            self._holds.get(counter, {}).pop(holder, None)
            if (counter, holder) not in self._settled:
                self._settled[(counter, holder)] = now
                self._used[counter] = self._used.get(counter, 0.0) + amount
            totals.append(self._used.get(counter, 0.0))
        return totals

    def usage(self, counter: str) -> tuple[float, float]:
        return self._used.get(counter, 0.0), self._reserved(counter, time.time())
