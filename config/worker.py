"""The gunicorn worker: gevent, plus prompt closing of idle keep-alive connections on shutdown.

Gunicorn's gevent worker waits, on SIGTERM, until every connection handler has returned; a
connection idling between keep-alive requests (nginx keeps a pool of them) only returns when
its keep-alive timeout ends, so every deploy waited `keepalive` seconds. Here, on SIGTERM,
connections that have served a request and are waiting for the next one are closed at once;
requests in progress still finish (up to graceful_timeout).
"""

from __future__ import annotations

from typing import Any

import gevent
from gunicorn.workers.ggevent import GeventWorker

__all__ = ["GracefulGeventWorker"]


class _Closing(Exception):
    """Thrown into a handler idling between requests; ends its keep-alive loop cleanly."""


class _IdleWait:
    """timeout_ctx for reading the next request: the keep-alive timeout, interruptible."""

    def __init__(self, worker: GracefulGeventWorker) -> None:
        self._worker = worker
        self._timeout = gevent.Timeout(worker.cfg.keepalive, False)

    def __enter__(self) -> None:
        self._greenlet = gevent.getcurrent()
        if self._greenlet in self._worker.served:
            self._worker.idle.add(self._greenlet)
        self._timeout.__enter__()

    def __exit__(self, kind: Any, value: Any, tb: Any) -> bool:
        self._worker.idle.discard(self._greenlet)
        suppressed = self._timeout.__exit__(kind, value, tb)
        return bool(suppressed) or isinstance(value, _Closing)


class GracefulGeventWorker(GeventWorker):
    def init_process(self) -> None:
        self.idle: set[gevent.Greenlet] = set()
        self.served: set[gevent.Greenlet] = set()
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
        return super().handle_request(listener_name, req, sock, addr)

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        # A worker still booting has no app yet: SIGTERM must not raise into its imports.
        extensions = getattr(getattr(self, "wsgi", None), "extensions", None)
        if extensions is not None:
            extensions["draining"] = True  # /health/ready answers 503 from now on
        gevent.spawn(self._close_idle)  # not inside the signal handler

    def _close_idle(self) -> None:
        for greenlet in list(self.idle):
            greenlet.kill(_Closing, block=False)
