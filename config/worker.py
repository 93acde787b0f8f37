"""The gunicorn worker: gevent, plus prompt closing of idle keep-alive connections on shutdown.

Gunicorn's gevent worker waits, on SIGTERM, until every connection handler has returned; a
connection idling between keep-alive requests (nginx keeps a pool of them) only returns when
its keep-alive timeout ends, so every deploy waited `keepalive` seconds. Here, after SIGTERM,
a connection that waits IDLE_GRACE seconds for its next request is closed; requests in progress
still finish (up to graceful_timeout).

Why not at once: closing an idle keep-alive connection races with nginx sending a request on
it, and nginx never re-sends a POST that may have reached us (it answers 502). During the grace
a request arriving on such a connection is served and answered with `Connection: close`, so
nginx drops the connection itself; under load every pooled connection is used (and so closed
cleanly) within the grace, and only connections nobody used for that long are closed by us.

And the listening socket: closing it resets every connection the kernel has queued but no worker
has accepted yet — nginx has usually sent a POST on it already, so the caller gets a 502. Before
closing, each worker accepts and serves whatever is queued (`_drain_and_close`).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import gevent
from gevent.pool import Pool
from gevent.server import StreamServer
from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker

__all__ = ["IDLE_GRACE", "DeadlineBody", "GracefulGeventWorker", "write_json_error"]

IDLE_GRACE = 2.0  # seconds an idle keep-alive connection may still bring a request after SIGTERM


class _Closing(Exception):
    """Thrown into a handler idling between requests; ends its keep-alive loop cleanly."""


class _IdleWait:
    """timeout_ctx for reading the next request: the keep-alive timeout, interruptible; once the
    worker is stopping, IDLE_GRACE (a request that began before SIGTERM answers without
    `Connection: close`, and its connection comes back here after the first sweep)."""

    def __init__(self, worker: GracefulGeventWorker) -> None:
        self._worker = worker
        # Only a wait that began before SIGTERM is swept: one that begins after it (a request
        # that began before SIGTERM just ended) ends IDLE_GRACE after it began, by its timeout.
        # Swept too, it could be closed the moment nginx reused it, with a POST already sent.
        self._sweepable = worker.alive
        self._timeout = gevent.Timeout(worker.cfg.keepalive if worker.alive else IDLE_GRACE, False)

    def __enter__(self) -> None:
        self._greenlet = gevent.getcurrent()
        if self._sweepable and self._greenlet in self._worker.served:
            self._worker.idle.add(self._greenlet)
        self._timeout.__enter__()

    def __exit__(self, kind: Any, value: Any, tb: Any) -> bool:
        self._worker.idle.discard(self._greenlet)
        suppressed = self._timeout.__exit__(kind, value, tb)
        return bool(suppressed) or isinstance(value, _Closing)


class GracefulGeventWorker(GeventWorker):
    def init_process(self) -> None:
        from config.settings import load_settings  # checked by gunicorn.conf.py in the master

        self.idle: set[gevent.Greenlet] = set()
        self.served: set[gevent.Greenlet] = set()
        self.quitting = False
        self.body_timeout = load_settings().body_read_timeout
        util.write_error = write_json_error  # gunicorn's own 400/431/500 answer in the JSON shape
        super().init_process()

    def timeout_ctx(self) -> _IdleWait:  # type: ignore[override]
        return _IdleWait(self)

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        try:
            super().handle(listener, client, addr)
        finally:
            self.served.discard(gevent.getcurrent())

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        self.served.add(gevent.getcurrent())
        req.body = DeadlineBody(req, time.monotonic() + self.body_timeout)
        return super().handle_request(listener_name, req, sock, addr)

    def run(self) -> None:
        """gunicorn's gevent loop, without TLS (nginx terminates it), closing each listener only
        after accepting what the kernel had queued on it."""
        if self.cfg.is_ssl:
            super().run()
            return
        servers = []
        for sock in self.sockets:
            sock.setblocking(1)
            handle = partial(self.handle, _Listener(sock))
            server = StreamServer(sock, handle=handle, spawn=Pool(self.worker_connections))
            if self.cfg.workers > 1:
                server.max_accept = 1  # as gunicorn: share new connections among the workers
            server.start()
            servers.append(server)
        while self.alive:
            self.notify()
            gevent.sleep(1.0)
        for server in servers:
            _drain_and_close(server)
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while time.monotonic() < deadline:
            if all(server.pool.free_count() == server.pool.size for server in servers):
                return
            self.notify()
            gevent.sleep(0.2)
        self.log.warning("Worker graceful timeout (pid:%s)", self.pid)
        for server in servers:
            server.stop(timeout=1)

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        # A worker still booting has no app yet: SIGTERM must not raise into its imports.
        found = getattr(getattr(self, "wsgi", None), "extensions", {}).get("prompt_builder")
        if found is not None:
            found.draining = True  # /health/ready answers 503 from now on
        gevent.spawn(self._close_idle)  # not inside the signal handler

    def handle_quit(self, sig: int, frame: Any) -> None:
        """SIGINT (Ctrl-C) or SIGQUIT: gunicorn's quick shutdown. Gunicorn's gevent worker runs it
        in a greenlet that raises SystemExit, which gevent reports as a failed greenlet, with a
        traceback, before passing it to the main greenlet; here it goes there directly. Ctrl-C
        reaches a worker twice (the terminal's SIGINT, then the master's SIGQUIT): once is enough."""
        if not self.quitting:
            self.quitting = True
            gevent.spawn(self._quit)

    def _quit(self) -> None:
        self.alive = False
        self.cfg.worker_int(self)
        gevent.sleep(0.1)
        gevent.get_hub().parent.throw(SystemExit(0))  # the worker's main greenlet exits as usual

    def _close_idle(self) -> None:
        gevent.sleep(IDLE_GRACE)
        for greenlet in list(self.idle):
            greenlet.kill(_Closing, block=False)


class DeadlineBody:
    """A request's body that must arrive whole within BODY_READ_TIMEOUT of its headers: a read
    past the deadline raises TimeoutError (the app answers 408) and marks the connection to
    close, so a body trickling in a byte at a time cannot hold a worker's slot (nginx's
    client_body_timeout does this in front; this holds without nginx too). gunicorn's own
    draining of an unread body goes through here as well."""

    def __init__(self, req: Any, deadline: float) -> None:
        self._req, self._body, self._deadline = req, req.body, deadline

    def _within(self, read: Any, *args: Any) -> Any:
        left = self._deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            with gevent.Timeout(left, TimeoutError):
                return read(*args)
        except TimeoutError:
            self._req.must_close = True
            raise TimeoutError("the request body did not arrive within BODY_READ_TIMEOUT") from None

    def read(self, size: int | None = None) -> bytes:
        return self._within(self._body.read, size)  # type: ignore[no-any-return]

    def readline(self, size: int | None = None) -> bytes:
        return self._within(self._body.readline, size)  # type: ignore[no-any-return]

    def readlines(self, size: int | None = None) -> list[bytes]:
        return self._within(self._body.readlines, size)  # type: ignore[no-any-return]

    def __iter__(self) -> DeadlineBody:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's error answer (a request line or headers it cannot take: 400, 414, 431; a crash
    outside the app: 500) in the service's one JSON error shape instead of its HTML page. A
    request line over limit_request_line is 414 URI Too Long, as nginx answers it (gunicorn: 400)."""
    import json
    import os

    if status_int == 400 and mesg.startswith("Request Line is too large"):
        status_int, reason = 414, "URI Too Long"

    body = json.dumps(
        {"error": reason, "details": mesg or reason, "requestId": os.urandom(16).hex()}, ensure_ascii=True
    ).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


class _Listener:
    """The listening socket as a connection handler sees it: gunicorn's handler only asks it for
    its address, and gets the one read at start, so the socket can close while handlers that
    were just accepted have not run yet."""

    def __init__(self, sock: Any) -> None:
        self._name = sock.getsockname()

    def getsockname(self) -> Any:
        return self._name


def _drain_and_close(server: StreamServer) -> None:
    """Stop accepting, hand every connection already queued on the listener to a handler, then
    close it — with no yield in between: a connection queued while this greenlet yielded would
    be reset by the close, with nginx's POST already sent on it. What remains is the time
    between two system calls, the last empty accept and the close."""
    server.stop_accepting()
    while accepted := server.do_read():  # None once the queue is empty (it never blocks)
        server.do_handle(*accepted)
    server.close()
