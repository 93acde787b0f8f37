"""The gunicorn worker's shutdown: connections the kernel queued on the listener are accepted and
served before it closes (closing it first would reset them, and nginx would answer 502)."""

from __future__ import annotations

import subprocess
import time

import gevent
from gevent import socket
from gevent.server import StreamServer

from config.worker import _drain_and_close


def _serve(sock: socket.socket, _address: object) -> None:
    request = sock.recv(64)
    sock.sendall(b"served " + request)
    sock.close()


def _ask(port: int, n: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"%d" % n)
        try:
            return client.recv(64)
        except ConnectionResetError:
            return b"reset"


def _queued(port: int) -> int:
    """Connections waiting in the listener's accept queue (its Recv-Q, as `ss` shows it)."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return int(out.split()[1]) if out.strip() else 0


def test_queued_connections_are_served_before_the_listener_closes() -> None:
    server = StreamServer(("127.0.0.1", 0), _serve)
    server.start()
    server.stop_accepting()  # as during a busy moment: new connections wait in the kernel's queue
    port = server.address[1]
    callers = [gevent.spawn(_ask, port, n) for n in range(5)]
    deadline = time.monotonic() + 10
    while _queued(port) < 5:  # every caller connected (the kernel completed the handshake)
        assert time.monotonic() < deadline, "the callers never reached the listener's queue"
        gevent.sleep(0.01)
    assert not any(c.ready() for c in callers)  # nobody accepted them yet
    _drain_and_close(server)
    gevent.joinall(callers, timeout=10)
    assert sorted(c.value for c in callers) == [b"served %d" % n for n in range(5)]
    refused = gevent.spawn(socket.create_connection, ("127.0.0.1", port), 1)
    refused.join(5)
    assert isinstance(refused.exception, ConnectionRefusedError)  # closed afterwards
