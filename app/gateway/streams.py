"""Streams shared by identical callers in one worker: one upstream stream per key, its events
kept in one buffer; a caller who joins late gets everything so far at once, then the live rest."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import gevent
from gevent.event import AsyncResult, Event

__all__ = ["HEARTBEAT", "StreamRun", "sse_event"]

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
