"""The gunicorn worker's shutdown: connections the kernel queued on the listener are accepted and
served before it closes (closing it first would reset them, and nginx would answer 502)."""

from __future__ import annotations

import socket as stdlib_socket
import subprocess
import time
from types import SimpleNamespace

import gevent
import gevent.event
from gevent import socket
from gevent.server import StreamServer

from config.worker import _drain_and_close, _IdleWait


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


def test_a_connection_arriving_while_the_drain_yields_is_served_or_refused_never_reset() -> None:
    """A client that connects whenever the drain lets other greenlets run (every other time:
    so a connection lands after a pass that found the queue empty): each connection the kernel
    completed is served; the ones that come after the close are refused before anything was
    sent (nginx tries another instance then), never reset after their request was sent."""
    server = StreamServer(("127.0.0.1", 0), _serve)
    server.start()
    port = server.address[1]
    connected: list[socket.socket] = []
    refused: list[int] = []

    def arrive() -> None:
        for turn in range(40):
            if turn % 2 == 0:
                try:  # a blocking connect: the kernel completes it before this greenlet yields
                    plain = stdlib_socket.create_connection(("127.0.0.1", port), timeout=5)
                except ConnectionRefusedError:
                    refused.append(turn)
                    return
                plain.sendall(b"%d" % turn)
                connected.append(socket.socket(fileno=plain.detach()))
            gevent.sleep(0)

    arrivals = gevent.spawn(arrive)
    gevent.sleep(0)
    _drain_and_close(server)
    arrivals.join(10)

    def answer(sock: socket.socket) -> bytes:
        with sock:
            sock.settimeout(5)
            try:
                return sock.recv(64)
            except ConnectionResetError:
                return b"reset"

    answers = gevent.joinall([gevent.spawn(answer, s) for s in connected], timeout=10)
    assert connected, "no connection reached the listener before it closed"
    assert [a.value for a in answers if not a.value.startswith(b"served ")] == []
    assert refused, "the listener never closed"


def test_only_connections_idle_since_before_sigterm_are_swept() -> None:
    """The sweep IDLE_GRACE after SIGTERM closes connections idle since before it; a connection
    that goes idle after SIGTERM (its request began before) is left to its own IDLE_GRACE
    timeout, never closed by the sweep the moment after nginx reused it."""
    worker = SimpleNamespace(alive=True, cfg=SimpleNamespace(keepalive=75), served=set(), idle=set())
    entered = gevent.event.Event()

    def idle_connection() -> None:
        worker.served.add(gevent.getcurrent())
        with _IdleWait(worker):  # type: ignore[arg-type]
            entered.set()
            gevent.sleep(30)

    before = gevent.spawn(idle_connection)
    entered.wait(5)
    assert worker.idle == {before}  # idle when SIGTERM comes: the sweep's to close
    worker.alive = False  # SIGTERM
    entered.clear()
    after = gevent.spawn(idle_connection)
    entered.wait(5)
    assert worker.idle == {before}  # idle only since SIGTERM: its own timeout closes it
    gevent.killall([before, after])
    assert worker.idle == set()


def test_a_body_must_arrive_whole_before_its_deadline() -> None:
    """DeadlineBody over a real (gevent) socket: what arrives in time is read; a body still
    trickling at its deadline raises TimeoutError and marks the connection to close."""
    from gunicorn.http.body import Body, LengthReader
    from gunicorn.http.unreader import SocketUnreader

    from config.worker import DeadlineBody

    ours, theirs = socket.socketpair()
    theirs.sendall(b"0123456789")
    whole = SimpleNamespace(must_close=False, body=Body(LengthReader(SocketUnreader(ours), 10)))
    assert DeadlineBody(whole, time.monotonic() + 5).read() == b"0123456789"  # in time
    assert not whole.must_close
    req = SimpleNamespace(must_close=False, body=Body(LengthReader(SocketUnreader(ours), 20)))
    body = DeadlineBody(req, time.monotonic() + 0.3)
    gevent.spawn_later(0.05, theirs.sendall, b"ab")  # two bytes of twenty, then nothing
    started = time.monotonic()
    try:
        body.read()
    except TimeoutError as exc:
        assert "BODY_READ_TIMEOUT" in str(exc)
    else:
        raise AssertionError("a body still trickling at its deadline must time out")
    assert req.must_close and time.monotonic() - started < 5
    try:
        body.readline()  # past the deadline: refused at once
    except TimeoutError:
        pass
    else:
        raise AssertionError("every read past the deadline times out")
    ours.close()
    theirs.close()


def test_gunicorns_own_errors_are_written_in_the_json_shape() -> None:
    import json

    from config.worker import write_json_error

    ours, theirs = socket.socketpair()
    write_json_error(
        ours, 431, "Request Header Fields Too Large", "Error parsing headers: 'limit request headers fields'"
    )
    ours.close()
    answer = b""
    while chunk := theirs.recv(4096):
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"Content-Type: application/json" in head and b"Connection: close" in head
    assert f"Content-Length: {len(body)}".encode() in head
    document = json.loads(body)
    assert document["error"] == "Request Header Fields Too Large" and len(document["requestId"]) == 32
    theirs.close()
