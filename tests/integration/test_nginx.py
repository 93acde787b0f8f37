"""The repository's nginx.conf in front of a real gunicorn: request ids, client addresses that
cannot be spoofed, JSON errors from nginx itself, and keep-alive to the upstream."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import Iterator

import pytest
import requests
import sseclient

from loadtest._procs import nginx
from tests.support import FakeUpstreamProcess, Server, need_binary, provider_env, start_server

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def nginx_in_front(*servers: Server) -> Iterator[str]:
    """Run the repository's nginx.conf, pointed at `servers`, on a free port; yield its URL."""
    with nginx([s.url.removeprefix("http://") for s in servers], need_binary("nginx")) as url:
        yield url


@pytest.fixture(scope="module")
def proxied() -> Iterator[tuple[str, Server]]:
    env = {"TRUSTED_PROXIES": "1", "RATE_LIMIT": "3/minute"}
    with start_server(env, workers=1) as server, nginx_in_front(server) as url:
        yield url, server


def test_streams_pass_through_unbuffered(fake_upstream: FakeUpstreamProcess) -> None:
    """The first event reaches the client while the upstream is still paused mid-stream."""
    fake_upstream.control(stream_chunks=20, faults=[{"action": "stream_pause", "after": 5}])
    with start_server(provider_env("anthropic", fake_upstream)) as server, nginx_in_front(server) as url:
        with requests.post(
            url + "/api/optimize-stream", json={"prompt": "through nginx", "mode": "code"}, stream=True, timeout=60
        ) as response:
            events = sseclient.SSEClient(response.iter_content(chunk_size=None)).events()
            first = next(events)
            assert first.event == "refined_delta"
            assert fake_upstream.stats()["paused"] == 1  # the upstream has not finished: nothing was held back
            fake_upstream.control(resume=True)
            names = [event.event for event in events]
        assert names[-2:] == ["refined", "done"]


def test_request_id_flows_through(proxied: tuple[str, Server]) -> None:
    url, _ = proxied
    mine = requests.get(url + "/health", headers={"X-Request-ID": "from-client-1"}, timeout=5)
    assert mine.headers["X-Request-ID"] == "from-client-1"
    generated = requests.get(url + "/health", timeout=5)
    assert len(generated.headers["X-Request-ID"]) == 32  # nginx's $request_id, passed to the app


def test_spoofed_forwarded_for_does_not_escape_the_rate_limit(proxied: tuple[str, Server]) -> None:
    url, _ = proxied
    statuses = [
        requests.post(
            url + "/api/optimize",
            json={"prompt": f"via nginx {i}", "mode": "code"},  # distinct: each reaches the service
            headers={"X-Forwarded-For": f"203.0.113.{i}"},
            timeout=10,
        ).status_code
        for i in range(5)
    ]
    assert statuses == [200, 200, 200, 429, 429]  # one client (nginx saw 127.0.0.1), whatever it claims


def test_nginx_answers_oversized_bodies_in_json(proxied: tuple[str, Server]) -> None:
    url, _ = proxied
    response = requests.post(
        url + "/api/optimize", data=b"x" * (2 * 1024 * 1024), headers={"Content-Type": "application/json"}, timeout=10
    )
    assert response.status_code == 413
    assert response.json()["error"] == "Request body too large"


def test_upstream_connections_are_kept_alive(proxied: tuple[str, Server]) -> None:
    url, server = proxied
    for _ in range(10):
        assert requests.get(url + "/health/live", timeout=5).status_code == 200
    pid = server.proc.pid
    established = (
        subprocess.run(
            ["ss", "-tnH", "state", "established", f"( sport = :{server.url.rsplit(':', 1)[1]} )"],
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()
    )
    assert 1 <= len(established) <= 3, (pid, established)  # reused, not one per request


def test_json_answers_are_gzipped_and_streams_are_not() -> None:
    with start_server() as server, nginx_in_front(server) as url:  # the offline provider: long answers
        body = {"prompt": "compress me " * 300, "mode": "research"}
        answer = requests.post(url + "/api/optimize", json=body, headers={"Accept-Encoding": "gzip"}, timeout=30)
        assert answer.status_code == 200 and len(answer.content) > 1024
        assert answer.headers["Content-Encoding"] == "gzip" and answer.json()["optimizedPrompt"]
        with requests.post(
            url + "/api/optimize-stream", json=body, headers={"Accept-Encoding": "gzip"}, stream=True, timeout=30
        ) as stream:
            assert "Content-Encoding" not in stream.headers  # gzip would hold events back
            assert b"event: done" in b"".join(stream.iter_content(chunk_size=None))


def test_operator_views_only_from_inside(proxied: tuple[str, Server]) -> None:
    """/metrics and /stats answer loopback and 10/8 callers; anyone else gets 403 from nginx."""
    url, _ = proxied
    host, port = url.removeprefix("http://").split(":")
    for path in ("/metrics", "/stats"):
        assert requests.get(url + path, timeout=10).status_code == 200  # from 127.0.0.1
        with socket.create_connection((host, int(port)), timeout=5, source_address=("127.0.0.2", 0)) as outsider:
            outsider.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            assert outsider.recv(64).startswith(b"HTTP/1.1 403")
