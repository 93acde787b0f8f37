"""Redis's health as the service sees it, one view per process: a call bounded by the call
timeout, a pause decided from Redis's own behaviour (not from a worker too starved to read its
reply), and the client whose every command, pipeline and script goes through that guard."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, cast

import gevent
import redis

__all__ = ["Guarded", "PausingRedis", "RedisHealth", "RedisPaused"]

log = logging.getLogger(__name__)


TIMEOUTS_TO_PAUSE = 3  # timeouts with no reply since (over the stall below) pause Redis; refused: at once
STALL_TO_PAUSE = 1.5  # call timeouts without a reply before timeouts pause Redis


class LoopLag:
    """How late this process's event loop has been lately: a greenlet asks to wake every TICK
    seconds and notes how much later it woke. On a busy machine (or under a burst of CPU-bound
    work in this worker) a Redis reply that came in time can be read only after a timeout fires:
    that is the worker's lateness, not Redis's, and must not be taken for an outage."""

    TICK = 0.05
    WINDOW = 2.0  # seconds of history a verdict looks at

    def __init__(self) -> None:
        self._late: list[tuple[float, float]] = []  # (when, how late), newest last
        self._watcher: gevent.Greenlet | None = None
        self._asked = 0.0  # when the watcher last went to sleep

    def start(self) -> None:
        if self._watcher is None:
            self._watcher = gevent.spawn(self._watch)

    def _watch(self) -> None:
        while True:
            asked = self._asked = time.monotonic()
            gevent.sleep(self.TICK)
            now = time.monotonic()
            late = now - asked - self.TICK
            if late > 0.01:
                self._late.append((now, late))
                if len(self._late) > 64:
                    del self._late[:32]

    def worst(self) -> float:
        """The most the loop was late within the last WINDOW seconds (including right now, when
        the watcher itself is overdue)."""
        now = time.monotonic()
        recent = [late for when, late in self._late if now - when <= self.WINDOW]
        overdue = now - self._asked - self.TICK if self._asked else 0.0  # 0: the watcher has not run yet
        return max([*recent, overdue], default=0.0)


class RedisHealth:
    """Counts Redis failures, logs them at most once per interval (an outage is visible without
    flooding the logs), and after a failure tells callers to leave Redis alone for `pause`
    seconds: a slow or absent Redis then costs a request at most one REDIS_SOCKET_TIMEOUT, not
    one per operation, and the first call after the pause finds out whether it is back.

    What pauses Redis is decided from Redis's own behaviour: a refused or broken connection at
    once; timeouts only once Redis has answered nothing for STALL_TO_PAUSE call timeouts. A
    timeout while this process's own loop was late by half the timeout or more (`starved`) is
    the worker's lateness, not Redis's: counted as `late`, never toward a pause. One slow reply on a busy machine once
    paused Redis for the whole worker, and every request in that second called the model alone."""

    def __init__(
        self,
        log_interval: float = 30.0,
        on_failure: Callable[[], None] | None = None,
        pause: float = 1.0,
    ) -> None:
        self.failures = 0
        self.on_failure = on_failure
        self.call_timeout: float | None = None  # a whole call's bound (see guard)
        self._interval = log_interval
        self._last_log = 0.0
        self._pause = pause
        self._skip_until = 0.0
        self.late = 0  # timeouts put down to this process's own lateness
        self._timeouts: list[float] = []  # when recent timeouts happened (monotonic)
        self._answered = 0.0  # when Redis last answered a guarded call
        self.lag = LoopLag()

    @classmethod
    def for_timeout(cls, socket_timeout: float) -> RedisHealth:
        """The service's view of one Redis reached with REDIS_SOCKET_TIMEOUT: a whole call
        (connecting and the handshake included) takes at most that long."""
        health = cls()
        health.call_timeout = socket_timeout
        return health

    def starved(self, exc: BaseException | None = None) -> bool:
        """Was `exc` (a timeout), or would a timeout now be, this process's lateness rather than
        Redis's? True when the loop was late by half a call's bound or more lately."""
        if exc is not None and not isinstance(exc, redis.TimeoutError):
            return False
        bound = self.call_timeout if self.call_timeout is not None else 0.25
        self.lag.start()
        return self.lag.worst() >= bound / 2

    def available(self) -> bool:
        """False within `pause` seconds of the last failure: serve without Redis meanwhile."""
        return time.monotonic() >= self._skip_until

    def guard(self, call: Callable[..., Any], *args: Any, even_paused: bool = False, **kwargs: Any) -> Any:
        """Make one Redis call: not at all while paused (RedisPaused; `even_paused`: all the
        same), and never for longer than `call_timeout` in all — connecting, the handshake of a
        new connection and a script's reload included, which the socket timeout bounds only one
        read at a time — plus the loop's recent lateness (LoopLag)."""
        if not even_paused and not self.available():
            raise RedisPaused("not tried: Redis failed a moment ago")
        self.lag.start()
        if self.call_timeout is None:
            answer = call(*args, **kwargs)
        else:
            # Plus how late this process's own loop has been lately: a reply that is there but
            # not yet read because the worker was starved is not Redis's lateness.
            bound = self.call_timeout + self.lag.worst()
            with gevent.Timeout(bound, redis.TimeoutError("Redis call timed out")):
                answer = call(*args, **kwargs)
        self._answered = time.monotonic()
        return answer

    def failed(self, operation: str, exc: Exception) -> None:
        if isinstance(exc, RedisPaused):
            return  # not tried: the pause is already running, and must end on time
        if self.starved(exc):
            self.late += 1
            log.debug(
                "redis %s timed out while this worker was late (%.3f s): not an outage", operation, self.lag.worst()
            )
            return
        self.failures += 1
        now = time.monotonic()
        if isinstance(exc, redis.TimeoutError) and not isinstance(exc, redis.ConnectionError):
            # Slow replies are not an outage: on a busy machine Redis (a process like any
            # other) stalls for a few hundred milliseconds now and then, and every call in
            # flight times out at once. Only when Redis has answered nothing for STALL_TO_PAUSE
            # call timeouts (and timed out TIMEOUTS_TO_PAUSE calls since) is it left alone.
            self._timeouts = [t for t in self._timeouts if t > self._answered] + [now]
            stall = STALL_TO_PAUSE * (self.call_timeout or 0.25)
            if len(self._timeouts) >= TIMEOUTS_TO_PAUSE and now - self._answered >= stall:
                self._skip_until = now + self._pause
        else:  # refused, reset, unreachable: down now
            self._skip_until = now + self._pause
        if self.on_failure is not None:
            self.on_failure()
        if now - self._last_log >= self._interval:
            self._last_log = now
            log.warning(
                "redis unavailable during %s: %s (failures so far: %d); serving without it",
                operation,
                type(exc).__name__,
                self.failures,
            )


class RedisPaused(redis.ConnectionError):
    """Raised instead of calling Redis while its health says to leave it alone."""


class Guarded:
    """A Redis client whose every call — a command, a script, a pipeline's execute — goes
    through `health.guard`: bounded in time in all, and (unless `even_paused`) not made while
    Redis is paused after a failure, so every caller's fallback for a Redis error applies
    without the wait. (Callers report failures, naming the operation.) `plain` shares its
    connections, bounded alike, without the pause: for locks, whose renewal and release must be
    tried whatever the last request saw, and for readiness."""

    health: RedisHealth
    plain: Any
    even_paused = False

    def execute_command(self, *args: Any, **options: Any) -> Any:
        run = super().execute_command  # type: ignore[misc]
        return self.health.guard(run, *args, even_paused=self.even_paused, **options)

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        pipe = super().pipeline(*args, **kwargs)  # type: ignore[misc]
        execute = pipe.execute

        def guarded(raise_on_error: bool = True) -> Any:
            return self.health.guard(execute, raise_on_error, even_paused=self.even_paused)

        pipe.execute = guarded
        return pipe


class PausingRedis(Guarded, redis.Redis):
    """The service's client of one server (or a Sentinel's master)."""

    @classmethod
    def connect(cls, url: str, health: RedisHealth, **options: Any) -> PausingRedis:
        return cast("PausingRedis", cls.from_url(url, **options)).guarded_by(health)

    def guarded_by(self, health: RedisHealth) -> PausingRedis:
        """This client, guarded by `health`, with its `plain` twin on the same connections."""
        self.health = health
        plain = PausingRedis(connection_pool=self.connection_pool)
        plain.health, plain.even_paused, plain.plain = health, True, plain
        self.plain = plain
        return self
