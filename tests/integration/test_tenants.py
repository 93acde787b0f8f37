"""Tenants on a real server: with cache scope `key` a second key asking the same thing gets its
own model call — for JSON answers, streams and jobs — and never joins another key's call in
flight; with `shared` it gets the first key's answer. Per-key rate limits from the keys file."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import FakeUpstreamProcess, provider_env, start_server, wait_until

pytestmark = pytest.mark.integration

ALICE, BOB, CAROL = ({"X-API-Key": f"{name}-secret"} for name in ("alice", "bob", "carol"))
KEYS = "alice:alice-secret,bob:bob-secret,carol:carol-secret"


def _post(url: str, path: str, body: dict[str, Any], key: dict[str, str]) -> requests.Response:
    return requests.post(url + path, json=body, headers={**key, "Connection": "close"}, timeout=60)


@pytest.mark.parametrize("scope", ["key", "shared"])
def test_json_answers_by_scope(fake_upstream: FakeUpstreamProcess, tmp_path: Path, scope: str) -> None:
    """Three tenants each ask the same 5 prompts, twice, in turn: `key` makes one call per tenant
    and prompt (15) and hits only a tenant's own answers; `shared` one call per prompt (5)."""
    env = {**provider_env("anthropic", fake_upstream), "API_KEYS": KEYS, "CACHE_DIR": str(tmp_path / "c")}
    if scope == "shared":
        env["CACHE_SCOPE"] = "shared"  # the operator opts into cross-tenant savings
    prompts = [{"prompt": f"the same question from three tenants, {i}", "mode": "code"} for i in range(5)]
    with start_server(env, workers=2) as server:
        first = [
            _post(server.url, "/api/optimize", body, key).headers["X-Cache"]
            for body in prompts
            for key in (ALICE, BOB, CAROL)
        ]
        again = [
            _post(server.url, "/api/optimize", body, key).headers["X-Cache"]
            for body in prompts
            for key in (ALICE, BOB, CAROL)
        ]
    statuses = first + again
    print(
        f"\ncache scope {scope}: 3 tenants x 5 prompts x 2: {fake_upstream.calls()} model calls, "
        f"hit ratio {statuses.count('HIT') / len(statuses):.2f}"
    )
    if scope == "key":
        assert first == ["MISS"] * 15 and again == ["HIT"] * 15
        assert fake_upstream.calls() == 15
    else:
        assert first == ["MISS", "HIT", "HIT"] * 5 and again == ["HIT"] * 15
        assert fake_upstream.calls() == 5


@pytest.mark.parametrize("scope", ["key", "shared"])
def test_in_flight_calls_streams_and_jobs_by_scope(
    fake_upstream: FakeUpstreamProcess, tmp_path: Path, scope: str
) -> None:
    """Alice's stream is in flight (held at the model); Bob's stream, Bob's JSON request and
    Carol's job for the same prompt arrive. `key`: each tenant its own call (3); `shared`: all
    join Alice's (1)."""
    env = {**provider_env("anthropic", fake_upstream), "API_KEYS": KEYS, "CACHE_DIR": str(tmp_path / "c")}
    env["CACHE_SCOPE"] = scope
    body = {"prompt": "one prompt, three tenants, in flight together", "mode": "code"}
    with start_server(env, workers=1) as server, fake_upstream.hold(), ThreadPoolExecutor(4) as pool:
        alice = pool.submit(_post, server.url, "/api/optimize-stream", body, ALICE)
        wait_until(lambda: fake_upstream.held() == 1, what="alice's call")
        bob_stream = pool.submit(_post, server.url, "/api/optimize-stream", body, BOB)
        bob_json = pool.submit(_post, server.url, "/api/optimize", body, BOB)
        job = _post(server.url, "/api/jobs", {"task": "optimize", "input": body}, CAROL).json()
        expected = 3 if scope == "key" else 1

        def joined() -> bool:
            if scope == "key":
                return fake_upstream.held() == 3
            status = requests.get(f"{server.url}/api/jobs/{job['id']}", headers=CAROL, timeout=30).json()["status"]
            return status == "running" and fake_upstream.held() == 1

        wait_until(joined, what="every tenant's caller in place")
        fake_upstream.release()
        answers = [alice.result(), bob_stream.result(), bob_json.result()]
        done = wait_until(
            lambda: (
                (found := requests.get(f"{server.url}/api/jobs/{job['id']}", headers=CAROL, timeout=30).json())[
                    "status"
                ]
                == "succeeded"
                and found
            ),
            what="carol's job",
        )
    assert [a.status_code for a in answers] == [200, 200, 200]
    bobs = sorted(a.headers["X-Cache"] for a in answers[1:])
    # key: Bob's two make one call of Bob's (whichever came first leads); shared: both join Alice's
    assert bobs == (["COALESCED", "MISS"] if scope == "key" else ["COALESCED", "COALESCED"])
    assert done["result"]["optimizedPrompt"]
    assert fake_upstream.calls() == expected


def test_a_key_s_own_rate_limit(fake_upstream: FakeUpstreamProcess, tmp_path: Path) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text(
        '[keys.alice]\nsecret = "alice-secret"\nrate_limit = "2/minute"\n\n[keys.bob]\nsecret = "bob-secret"\n'
    )
    env = {"API_KEYS_FILE": str(keys), "RATE_LIMIT": "5/minute"}
    with start_server(env, workers=1) as server:
        body = {"prompt": "limits", "mode": "code"}
        alice = [_post(server.url, "/api/optimize", body, ALICE) for _ in range(3)]
        bob = [_post(server.url, "/api/optimize", body, BOB) for _ in range(6)]
    assert [r.status_code for r in alice] == [200, 200, 429]
    assert alice[0].headers["RateLimit-Limit"] == "2" and "2 per 1 minute" in alice[2].json()["details"]
    assert [r.status_code for r in bob] == [200] * 5 + [429]


def test_two_authorization_headers_on_the_wire_get_401(tmp_path: Path) -> None:
    """Sent as two header lines (gunicorn joins them with a comma): refused as malformed, 401."""
    import socket
    from urllib.parse import urlsplit

    with start_server({"API_KEYS": KEYS}, workers=1) as server:
        where = urlsplit(server.url)
        body = b'{"prompt": "x", "mode": "code"}'
        raw = (
            b"POST /api/optimize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer alice-secret\r\nAuthorization: Bearer bob-secret\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
        )
        with socket.create_connection((where.hostname, where.port), timeout=30) as sock:
            sock.sendall(raw)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401") and b'"error":"API key malformed"' in payload
    assert b"secret" not in payload
