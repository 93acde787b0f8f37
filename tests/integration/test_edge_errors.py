"""What a caller can provoke before the app sees a request — a request line or headers gunicorn
refuses, a body that trickles in — answers in the one JSON error shape, and a slow body cannot
hold a worker's slot: on a real gunicorn, without nginx in front."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from tests.support import Server, start_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with start_server({"BODY_READ_TIMEOUT": "1"}, workers=1) as server:
        yield server


def _exchange(server: Server, raw: bytes, trickle: bytes = b"", every: float = 0.0) -> bytes:
    """Send `raw`, then `trickle` a byte at a time; return everything the server answered."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(raw)
        for byte in trickle:
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # the server closed the connection: what it answered is read below
                break
            time.sleep(every)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def _json_error(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = {
        line.split(b":", 1)[0].strip().lower(): line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")[1:]
    }
    assert headers[b"content-type"].startswith(b"application/json"), head
    document = json.loads(body)
    assert set(document) >= {"error", "details", "requestId"}, document
    return status, document


REFUSED_BY_GUNICORN = [
    ("request line over 8190 bytes", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("query over 8190 bytes", b"GET /api/optimize?body=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("not a request line", b"HELLO\r\n\r\n", 400),
    ("a method with bad characters", b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("an unknown HTTP version", b"GET / HTTP/7.1\r\nHost: x\r\n\r\n", 400),
    ("a header over 8190 bytes", b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
    ("more than 100 headers", b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(120)) + b"\r\n", 431),
    ("a header name with a space", b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", 400),
]


@pytest.mark.parametrize(("name", "raw", "status"), REFUSED_BY_GUNICORN, ids=[r[0] for r in REFUSED_BY_GUNICORN])
def test_what_gunicorn_refuses_answers_json(server: Server, name: str, raw: bytes, status: int) -> None:
    found, document = _json_error(_exchange(server, raw))
    assert found == status, (name, document)


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("Content-Length", b"Content-Length: 40\r\n"),
        ("chunked", b"Transfer-Encoding: chunked\r\n"),
    ],
)
def test_a_trickling_body_gets_408_and_frees_its_slot(server: Server, name: str, head: bytes) -> None:
    """1 byte every 0.2 s never finishes a 40-byte body within BODY_READ_TIMEOUT=1: the server
    answers 408 and closes, while other requests are served all along."""
    body = b'{"prompt": "slow", "mode": "code"}'.ljust(40)
    trickle = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n" if name == "chunked" else body
    raw = b"POST /api/optimize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + head + b"\r\n"
    served: list[int] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            served.append(requests.get(server.url + "/health/live", timeout=30).status_code)
            time.sleep(0.05)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        answer = _exchange(server, raw, trickle, every=0.2)
    finally:
        done.set()
        prober.join()
    status, document = _json_error(answer)
    assert status == 408 and document["error"] == "Request timeout", document
    assert b"connection: close" in answer.lower()
    assert served and set(served) == {200}
