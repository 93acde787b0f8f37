"""One route decision, tried as an attacker would: every spelling of a path — repeated slashes,
dot segments, percent-encoded letters and slashes, a trailing slash, case, parameters — meets
the same guard as the route it reaches, on a real gunicorn and through the repository's nginx.

A spelling either routes to a protected endpoint (and then needs its key or token, and with one
reaches the handler), or routes nowhere (a JSON 404, 405 or 308 that runs no handler). Nothing
else: no model call, no answer without a key, no HTML."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest

from loadtest._procs import nginx
from tests.support import FakeUpstreamProcess, Server, need_binary, provider_env, start_server

pytestmark = pytest.mark.integration

KEY, TOKEN = "secret-alice-123", "scrape-token-1"
BODY = json.dumps({"prompt": "spelled", "mode": "code"})

# (method, spelling, what it routes to without credentials: 401 = a protected route, else the
# routing answer that runs no handler)
SPELLINGS = [
    ("POST", "/api/optimize", 401),
    ("POST", "//api/optimize", 401),
    ("POST", "///api/optimize", 401),
    ("POST", "/%2Fapi/optimize", 401),  # an encoded slash: the server decodes it to //api
    ("POST", "/api%2Foptimize", 401),
    ("POST", "/api/%6Fptimize", 401),  # an encoded letter
    ("POST", "/%61pi/optimize", 401),
    ("POST", "/api/optimize?x=1", 401),
    ("POST", "//api/generate-questions", 401),
    ("GET", "/api/optimize?body=e30", 401),  # the CDN's door (a GET with its request in the URL)
    ("GET", "//api/optimize?body=e30", 401),
    ("GET", "/api/%6Fptimize?body=e30", 401),
    ("POST", "//api/optimize-stream", 401),
    ("POST", "//api/jobs", 401),
    ("GET", "//api/jobs/0123456789abcdef0123456789abcdef", 401),
    ("DELETE", "//api/jobs/0123456789abcdef0123456789abcdef", 401),
    ("GET", "//api/jobs/0123456789abcdef0123456789abcdef/events", 401),
    ("GET", "//metrics", 401),
    ("GET", "///stats", 401),
    ("GET", "/%6Detrics", 401),
    ("GET", "/stats?verbose=1", 401),
    ("POST", "/api//optimize", 308),  # Werkzeug's merge_slashes: a redirect, no handler
    ("GET", "/api/jobs//x", 308),
    ("POST", "/api/optimize/", 404),
    ("POST", "/api/optimize//", 404),
    ("POST", "/api/./optimize", 404),
    ("POST", "/api/../api/optimize", 404),
    ("POST", "/x/../api/optimize", 404),
    ("POST", "/API/optimize", 404),
    ("POST", "/Api/Optimize", 404),
    ("POST", "/api/optimize;x", 404),
    ("POST", "/api/optimize%2F", 404),
    ("POST", "/api/optimize%00", 404),
    ("GET", "/metrics/", 404),
    ("GET", "/./metrics", 404),
    ("GET", "/METRICS", 404),
    ("GET", "/api/../metrics", 404),
    ("GET", "/%2e%2e/metrics", 404),
    ("PUT", "//api/optimize", 405),
]

# nginx answers a few spellings itself, before any upstream: a path above the root is its 400
NGINX_OWN = {"/api/optimize%00": 400, "/%2e%2e/metrics": 400}
# nginx normalises these onto an operation's path and sends the service that path (the edge
# tier's location: the path it keys on is the one the service routes): the key check answers.
NGINX_OWN |= {path: 401 for path in ("/api//optimize", "/api/./optimize", "/api/../api/optimize", "/x/../api/optimize")}


def _send(base: str, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    """The request exactly as spelled (http.client sends the path as given)."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(
            method,
            path,
            body=BODY if method == "POST" else None,
            headers={"Content-Type": "application/json", "Connection": "close", **(headers or {})},
        )
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def _credentials(path: str) -> dict[str, str]:
    operator = "metrics" in path.lower() or "stats" in path.lower() or "%6detrics" in path.lower()
    return {"Authorization": f"Bearer {TOKEN if operator else KEY}"}


@pytest.fixture(scope="module")
def locked(_fake_upstream_process: FakeUpstreamProcess) -> Iterator[tuple[Server, str]]:
    env = {**provider_env("anthropic", _fake_upstream_process), "API_KEYS": f"alice:{KEY}", "METRICS_TOKEN": TOKEN}
    with start_server(env, workers=1) as server:
        yield server, server.url


@pytest.fixture(scope="module")
def proxied(locked: tuple[Server, str]) -> Iterator[str]:
    server, _ = locked
    with nginx([server.url.removeprefix("http://")], need_binary("nginx")) as url:
        yield url


def _check_without_credentials(base: str, method: str, path: str, expected: int) -> None:
    status, headers, body = _send(base, method, path)
    assert status == expected, (method, path, status, body[:200])
    assert headers["content-type"].startswith("application/json"), (path, headers)
    document = json.loads(body)
    assert set(document) >= {"error", "details", "requestId"}, document
    if expected == 308:
        assert headers["location"] == document["location"] and "//" not in headers["location"]


@pytest.mark.parametrize(("method", "path", "expected"), SPELLINGS)
def test_every_spelling_meets_the_guard_of_its_route(
    locked: tuple[Server, str], fake_upstream: FakeUpstreamProcess, method: str, path: str, expected: int
) -> None:
    _, url = locked
    _check_without_credentials(url, method, path, expected)
    assert fake_upstream.calls() == 0  # no spelling reaches the model without a key
    status, _, body = _send(url, method, path, _credentials(path))
    if expected == 401:  # a protected route: with its credential the handler answers
        assert status not in (401, 403, 404, 405, 308), (path, status, body[:200])
    else:  # routes nowhere, with or without a credential
        assert status == expected, (path, status)


@pytest.mark.parametrize(("method", "path", "expected"), SPELLINGS)
def test_every_spelling_meets_the_guard_through_nginx(
    proxied: str, fake_upstream: FakeUpstreamProcess, method: str, path: str, expected: int
) -> None:
    _check_without_credentials(proxied, method, path, NGINX_OWN.get(path, expected))
    assert fake_upstream.calls() == 0


def test_a_wrong_or_second_credential_is_refused_on_every_protected_spelling(locked: tuple[Server, str]) -> None:
    _, url = locked
    for method, path, expected in SPELLINGS:
        if expected != 401:
            continue
        wrong, _, _ = _send(url, method, path, {"Authorization": "Bearer not-a-key-of-ours"})
        assert wrong == 403, path
        mine = _credentials(path)["Authorization"].removeprefix("Bearer ")
        two, _, body = _send(url, method, path, {"X-API-Key": mine, "Authorization": "Bearer other-key"})
        assert two == 401 and json.loads(body)["error"] == "API key malformed", path
