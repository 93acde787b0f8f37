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

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import gevent
import redis

from app.coordination.lease import Keeper
from app.errors import ServiceUnavailableError
from app.gateway.slots import BrokenSlots, LocalSlots, RedisSlots, SlotsBusy, SqliteSlots, _PolledSlots
from app.localdb import LocalDB
from app.tenancy import Caller

__all__ = ["Budget"]

log = logging.getLogger(__name__)

# The shared slots or pause out of reach: a slot is refused (503), a pause is not waited for.
_STORE_ERRORS = (redis.RedisError, sqlite3.Error, OSError)


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
