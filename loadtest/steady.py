"""Steady load for the fleet's chaos tests and the soak: callers that each send one request after
another (optionally at a fixed rate) until stopped, recording every outcome.

The default mix is what a fleet serves all day: answers already cached (hits), new prompts
(misses), the same new prompt sent by several callers in the same instant (coalesced), and
streams. Nothing here depends on the machine's speed: figures are counted, not timed against
fixed limits."""

from __future__ import annotations

import json
import random
import selectors
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests

__all__ = ["Outcome", "SteadyLoad", "mixed_request", "raw_burst"]


@dataclass(frozen=True)
class Outcome:
    """One request: when it started (monotonic), how long it took, and its status (or the
    exception's name when no answer came)."""

    started: float
    seconds: float
    status: int | str
    kind: str
    detail: str = ""  # the start of the answer (or the exception) when it was not a 200


Request = Callable[[requests.Session, str, int, random.Random], tuple[int, str, str]]


def mixed_request(session: requests.Session, url: str, n: int, rng: random.Random) -> tuple[int, str, str]:
    """Send one request of the day's mix; return (status, kind, the answer's start unless 200)."""
    roll = rng.random()
    if roll < 0.5:
        kind, prompt = "hit", f"hot prompt {rng.randrange(20)}"
    elif roll < 0.75:
        kind, prompt = "miss", f"new prompt {n} {rng.random()}"
    elif roll < 0.9:
        # Callers sending in the same 200 ms send the same new prompt: coalesced upstream.
        kind, prompt = "coalesced", f"shared prompt {int(time.time() * 5)}"
    else:
        kind, prompt = "stream", f"streamed prompt {rng.randrange(50)}"
    body = {"prompt": prompt, "mode": "code"}
    if kind == "stream":
        with session.post(url + "/api/optimize-stream", json=body, stream=True, timeout=60) as response:
            data = b"".join(response.iter_content(chunk_size=None))
            if response.status_code == 200 and b"event: done" not in data:
                return 599, kind, data[-300:].decode(errors="replace")  # no done event: a failure
            return (
                response.status_code,
                kind,
                "" if response.status_code == 200 else data[:300].decode(errors="replace"),
            )
    response = session.post(url + "/api/optimize", json=body, timeout=60)
    return response.status_code, kind, "" if response.status_code == 200 else response.text[:300]


class SteadyLoad:
    """`callers` threads sending `request` to `url` back to back (or, with `rate`, at most that many
    requests per second in all) from `start()` until `stop()`."""

    def __init__(
        self, url: str, callers: int, request: Request = mixed_request, rate: float | None = None, seed: int = 7
    ) -> None:
        self.url = url
        self.callers = callers
        self.request = request
        self.rate = rate
        self.seed = seed
        self.outcomes: list[Outcome] = []
        self._stopping = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._count = 0
        self._lock = threading.Lock()

    def start(self) -> SteadyLoad:
        self._pool = ThreadPoolExecutor(self.callers)
        for i in range(self.callers):
            self._pool.submit(self._caller, i)
        return self

    def stop(self) -> list[Outcome]:
        self._stopping.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        return list(self.outcomes)

    def __enter__(self) -> SteadyLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def done(self) -> int:
        """Requests answered (or failed) so far."""
        return len(self.outcomes)

    def failures(self, since: float = 0.0) -> list[Outcome]:
        return [o for o in list(self.outcomes) if o.started >= since and o.status != 200]

    def _caller(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        interval = self.callers / self.rate if self.rate else 0.0
        next_at = time.monotonic() + rng.random() * interval
        with requests.Session() as session:
            while not self._stopping.is_set():
                if interval:
                    pause = next_at - time.monotonic()
                    if pause > 0 and self._stopping.wait(pause):
                        return
                    next_at += interval
                with self._lock:
                    self._count += 1
                    n = self._count
                started = time.monotonic()
                status: int | str
                try:
                    status, kind, detail = self.request(session, self.url, n, rng)
                except requests.RequestException as exc:
                    status, kind, detail = type(exc).__name__, "error", str(exc)[:300]
                self.outcomes.append(Outcome(started, time.monotonic() - started, status, kind, detail))


def raw_burst(host: str, port: int, n: int, ramp: float, timeout: float = 300) -> list[tuple[int, float]]:
    """Open `n` connections over `ramp` seconds, each sending one distinct POST /api/optimize,
    and return (status, seconds until its answer ended) for each — non-blocking sockets, so a
    thousand callers need no thousand threads. Status 0: no answer within `timeout`."""
    selector = selectors.DefaultSelector()
    replies: dict[socket.socket, bytearray] = {}
    sent: dict[socket.socket, float] = {}
    took: dict[socket.socket, float] = {}
    began = time.monotonic()
    for i in range(n):
        pause = began + ramp * i / n - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        body = json.dumps({"prompt": f"burst {i} {time.time()}", "mode": "code"}).encode()
        head = (
            f"POST /api/optimize HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        sock = socket.create_connection((host, port), timeout=10)
        sent[sock] = time.monotonic()
        sock.sendall(head + body)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        replies[sock] = bytearray()
    pending = set(replies)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1):
            sock = key.fileobj  # type: ignore[assignment]
            chunk = sock.recv(65536)
            if chunk:
                replies[sock] += chunk
            else:
                took[sock] = time.monotonic() - sent[sock]
                selector.unregister(sock)
                sock.close()
                pending.discard(sock)
    for sock in pending:
        sock.close()
    return [
        (int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0, took.get(sock, timeout))
        for sock, reply in replies.items()
    ]
