"""A counted reservation: reserve an amount against a limit for a while, settle it with the
amount actually used, or release it. What holds the budgets (per-key tokens and cost) exact
across processes.

Each counter (one key's tokens for one day, say) keeps `used` and the live reservations, each
with its holder's id, amount and expiry. `reserve` admits a holder only when, for every counter
it names, `used + reserved + amount <= limit` — all or none, in one atomic step — and returns
which counter had no room otherwise. A reservation is its holder's lease on the amount: the
holder renews it while it lives (`renew`, by the process's lease Keeper), and it ends when it is
settled or released, or when it expires — a holder that died (its worker SIGKILLed) gives its
amount back one hold after its last renewal, never at the end of the period. Settling twice
counts once.

Three stores, one contract (tests/unit/coordination/test_reservation.py runs it on each):
`RedisReservations` (a fleet: one Lua script per step; app.coordination.redis_reservations),
`SqliteReservations` (the workers of one machine: one transaction per step, in CACHE_DIR) and
`MemoryReservations` (one process).
A store that cannot answer raises `StoreUnavailable`; its callers refuse (fail closed).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from app.localdb import LocalDB

__all__ = [
    "Claim",
    "MemoryReservations",
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

    def renew(self, holder: str, counters: Sequence[str], expires_at: float) -> bool:
        """Extend `holder`'s live reservation on `counters` to `expires_at`: False when it has
        none left (it expired or was settled) — it is never brought back."""

    def settle(self, holder: str, used: Sequence[tuple[str, float]], keep: float) -> list[float]:
        """End `holder`'s reservation on each counter and add what it used; return each
        counter's `used` after. A holder settled before (or whose reservation expired) still
        adds its use once, never twice."""

    def usage(self, counter: str) -> tuple[float, float]:
        """(used, reserved by live holders) of `counter`."""


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

    def renew(self, holder: str, counters: Sequence[str], expires_at: float) -> bool:
        return self._run(self._renew, holder, counters, expires_at)  # type: ignore[no-any-return]

    @staticmethod
    def _renew(conn: sqlite3.Connection, now: float, holder: str, counters: Sequence[str], expires: float) -> bool:
        renewed = 0
        for counter in counters:
            renewed += conn.execute(
                "update holds set expires = ? where counter = ? and holder = ?", (expires, counter, holder)
            ).rowcount
        return renewed > 0

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

    def renew(self, holder: str, counters: Sequence[str], expires_at: float) -> bool:
        now, renewed = time.time(), False
        for counter in counters:
            self._reserved(counter, now)  # what expired is gone
            held = self._holds.get(counter, {}).get(holder)
            if held is not None:
                self._holds[counter][holder] = (held[0], expires_at)
                renewed = True
        return renewed

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
