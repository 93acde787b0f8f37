"""Calls in flight in one worker, one entry per key for JSON callers and streams alike
(`InFlight`): each a `StreamRun` — a stream's events kept in one buffer (a caller who joins late
gets everything so far at once, then the live rest), and the call's outcome, which JSON callers
wait for. A JSON call's run has no events: a stream joining it waits for its outcome. And what
a stream is made of besides its run: its job, a caller's view of it, its tee into Redis."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import gevent
from gevent import Timeout
from gevent.event import AsyncResult, Event

from app.coalescing import SharedStreams
from app.coordination.lease import Lease
from app.errors import GatewayTimeoutError, ServiceUnavailableError
from app.providers.base import LLMRequest

__all__ = ["HEARTBEAT", "InFlight", "Stream", "StreamJob", "StreamRun", "Tee", "sse_event"]

# An SSE comment, sent to a caller when nothing else was sent for a while: it keeps proxies from
# timing the connection out and tells us within a beat when the caller has gone.
HEARTBEAT = b":\n\n"


def sse_event(name: str, data: dict[str, Any]) -> bytes:
    """One server-sent event, its data one line of JSON."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {name}\ndata: {payload}\n\n".encode()


class StreamRun:
    """The events of one stream, in order, for every follower of its key in this worker.

    `result` settles when the stream ends: the stored value on success, the error otherwise;
    a JSON request for the same key waits on it. `on_idle` is called when the last follower
    leaves before the end (the producer is then cancelled). `on_size` is told each change of
    the bytes held, so they count against the cache's byte bound until the stream ends."""

    def __init__(
        self, key: str, on_idle: Callable[[StreamRun], None], on_size: Callable[[int], None] | None = None
    ) -> None:
        self.key = key
        self.events: list[bytes] = []
        self.size = 0  # bytes held: the one buffer per in-flight key
        self.done = False
        self.followers = 0
        self.result: AsyncResult = AsyncResult()
        self.producer: gevent.Greenlet | None = None  # the greenlet reading the upstream
        self.tee: Callable[[bytes], None] | None = None  # also send each event here (Redis)
        self.shared = False  # led for followers in other processes too
        self.orphaned = False  # its own callers left while followers elsewhere still read
        self.json = False  # a JSON call's run: no events, only its outcome
        self._changed = Event()
        self._on_idle = on_idle
        self._on_size = on_size

    def append(self, event: bytes) -> None:
        if self.tee is not None:
            self.tee(event)
        self.events.append(event)
        self.size += len(event)
        if self._on_size is not None:
            self._on_size(len(event))
        self._wake()

    def finish(self) -> None:
        """The stream has ended: wake the followers; its bytes no longer count (the buffer lives
        on only while followers send its last events)."""
        if self._on_size is not None and not self.done:
            self._on_size(-self.size)
        self.done = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, Event()
        changed.set()

    def follow(self, heartbeat: float) -> Iterator[bytes]:
        """Yield every event from the first, live until the end; HEARTBEAT after `heartbeat`
        seconds of silence. Closing the iterator (the caller left) releases the follower."""
        self.followers += 1
        try:
            if not self.events:
                # Nothing to send yet: an empty write makes the server send the response headers
                # now, while the upstream thinks, instead of with the first delta.
                yield b""
            sent = 0
            while True:
                changed = self._changed
                if sent < len(self.events):
                    batch = self.events[sent:]
                    sent += len(batch)
                    yield b"".join(batch)  # a late joiner gets the backlog in one write
                elif self.done:
                    return
                elif not changed.wait(heartbeat):
                    yield HEARTBEAT
        finally:
            self.followers -= 1
            if self.followers == 0 and not self.done:
                self._on_idle(self)

    def wait(self, timeout: float) -> Any:
        """For a JSON caller: count as a follower (the stream goes on for it), return the result
        (raise its error, or gevent.Timeout after `timeout`)."""
        self.followers += 1
        try:
            return self.result.get(timeout=timeout)
        finally:
            self.followers -= 1
            if self.followers == 0 and not self.done:
                self._on_idle(self)


T = TypeVar("T")


def _ignore(_: Any) -> None:
    pass


class InFlight:
    """The calls in flight in this worker by key, JSON calls and streams in one map. `run` makes
    a JSON call once per key: the first caller (leader) runs it, identical callers meanwhile
    (followers) wait for its value or its error — whether the run is a JSON call's or a stream's.
    Streams add and forget their own runs. `on_wait(+1/-1)` is told when a JSON follower starts
    and stops waiting. Create inside the worker (after gevent patching); only plain dict
    operations happen between switches, so no lock is needed."""

    def __init__(self, on_wait: Callable[[int], None] | None = None) -> None:
        self._runs: dict[str, StreamRun] = {}
        self._on_wait = on_wait or _ignore

    def get(self, key: str) -> StreamRun | None:
        return self._runs.get(key)

    def add(self, run: StreamRun) -> None:
        self._runs[run.key] = run

    def forget(self, run: StreamRun) -> None:
        if self._runs.get(run.key) is run:
            del self._runs[run.key]

    def __len__(self) -> int:
        return len(self._runs)

    def wait(self, run: StreamRun, timeout: float) -> Any:
        """A JSON follower's wait for `run`'s value (its error raised; 504 after `timeout`)."""
        self._on_wait(1)
        try:
            return run.wait(timeout)
        except Timeout:
            message = (
                "Timed out waiting for an identical request already in flight"
                if run.json
                else "Timed out waiting for an identical stream in flight"
            )
            raise GatewayTimeoutError(message) from None
        finally:
            self._on_wait(-1)

    def run(self, key: str, call: Callable[[], T], timeout: float) -> tuple[T, bool]:
        """Return (value, coalesced): coalesced is True when another caller did the work."""
        found = self._runs.get(key)
        if found is not None:
            return self.wait(found, timeout), True
        run = StreamRun(key, on_idle=_ignore)  # followers leaving never stop the leader's own call
        run.json = True
        self._runs[key] = run
        try:
            value = call()
        except Exception as exc:
            run.result.set_exception(exc)
            raise
        except BaseException:  # leader killed (GreenletExit, Timeout): followers must not hang
            run.result.set_exception(ServiceUnavailableError("An identical request in flight was cancelled"))
            raise
        else:
            run.result.set(value)
            return value, False
        finally:
            run.finish()
            self.forget(run)


@dataclass(frozen=True)
class StreamJob:
    """What a stream's producer needs besides its run: the request and how to answer it."""

    request: LLMRequest
    parse: Callable[[str], Any]
    store: bool
    draft_model: str | None
    origin: str  # the request id that started the stream, for its error event


@dataclass(frozen=True)
class Stream:
    """A stream as one caller gets it: where it came from, and its event bytes."""

    cache_status: str  # HIT | MISS | COALESCED
    events: Iterator[bytes]
    cache_seconds: float | None = None  # how long its cache lookup took (None: it made none)


class Tee:
    """A leader's events into the key's channel, for followers in other processes."""

    def __init__(self, shared: SharedStreams, key: str, lock: Lease, run: StreamRun) -> None:
        self._shared, self._key, self._lock, self._run = shared, key, lock, run

    def __call__(self, event: bytes) -> None:
        if not self._shared.publish(self._key, self._lock, event):
            # Followers elsewhere may miss this event: publish nothing more. They finish from
            # the answer in L2 (stored before the end marker), or end with an error event when
            # it is not there — never with a text that has a hole.
            self._run.tee = None
