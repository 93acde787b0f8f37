"""L3, the edge tier: the repository's nginx.conf caching what the service marks shareable, on a
real nginx in front of a real gunicorn. Hits carry their own request's headers; distinct
requests never share; a caller's no-cache/no-store, credentials and Prefer bypass it; errors
are never kept; with API keys the edge answers nothing. The edge's drills (identical misses at
once, the service down) are in tests/fleet/test_edge_fleet.py."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from loadtest._procs import EDGE_LOG, mtail, nginx
from tests.integration.test_metrics import scrape, total
from tests.support import Server, need_binary, start_server

pytestmark = pytest.mark.integration

OPTIMIZE = "/api/optimize"


def _post(url: str, body: Any, path: str = OPTIMIZE, **headers: str) -> requests.Response:
    return requests.post(url + path, json=body, headers=headers, timeout=30)


def _door(body: Any) -> str:
    return quote(json.dumps(body), safe="")


def _service_requests(server: Server) -> float:
    return total(scrape(server), "http_requests_total", endpoint="optimize.optimize")


@pytest.fixture(scope="module")
def edge() -> Iterator[tuple[str, Server]]:
    with (
        start_server({"TRUSTED_PROXIES": "1"}, workers=2) as server,
        nginx([server.url.removeprefix("http://")], need_binary("nginx")) as url,
    ):
        yield url, server


def test_a_shareable_answer_is_served_by_the_edge_with_this_requests_own_headers(edge: tuple[str, Server]) -> None:
    url, server = edge
    body = {"prompt": "served at the edge", "mode": "code"}
    before = _service_requests(server)
    first = _post(url, body, **{"X-Request-ID": "edge-first"})
    assert first.status_code == 200 and first.headers["X-Cache-Edge"] == "MISS"
    assert first.headers["X-Cache"] == "MISS" and first.headers["X-Request-ID"] == "edge-first"
    for i in range(3):
        hit = _post(url, body, **{"X-Request-ID": f"edge-hit-{i}"})
        assert hit.headers["X-Cache-Edge"] == "HIT" and hit.json() == first.json()
        assert hit.headers["X-Request-ID"] == f"edge-hit-{i}"  # this request's, not the stored one's
        for made_by_the_service in ("X-Cache", "Age", "Server-Timing"):
            assert made_by_the_service not in hit.headers  # the service did not answer this request
        assert hit.headers["ETag"] == first.headers["ETag"]
    assert _service_requests(server) == before + 1


def test_every_spelling_of_a_path_is_one_entry_and_the_service_routes_what_the_edge_keyed(
    edge: tuple[str, Server],
) -> None:
    """nginx normalises the path for its key; the service is sent that same path, so the edge
    and the service never decide differently about one request."""
    url, _ = edge
    body = {"prompt": "one entry, many spellings", "mode": "research"}
    spellings = ["//api/optimize", "/api//optimize", "/api/./optimize", "/api/x/../optimize", "/api/optimize"]
    answers = [_post(url, body, path=path) for path in spellings]
    assert [a.status_code for a in answers] == [200] * len(spellings)
    assert [a.headers["X-Cache-Edge"] for a in answers] == ["MISS"] + ["HIT"] * (len(spellings) - 1)
    assert answers[0].headers["X-Cache"] == "MISS"  # the service answered the odd spelling itself
    assert all(a.json() == answers[0].json() for a in answers)


@pytest.mark.parametrize("size", [10, 1_000, 1_900, 2_100, 6_000, 9_900, 12_000, 49_000])
def test_requests_of_every_size_pass_the_edge_and_are_kept_up_to_its_bound(edge: tuple[str, Server], size: int) -> None:
    """nginx keeps an entry's key (the body) and the answer's headers (Content-Location: the
    door) in one header buffer: every size is answered; under 10,000 bytes of body it is kept,
    and a door is named when it fits."""
    url, _ = edge
    field = "prompt" if size <= 10_000 else "fullPrompt"
    if field == "prompt":
        body: dict[str, str] = {"prompt": "door " + "y" * (size - 40), "mode": "code"}
    else:
        body = {"highlightedText": "y", "customRequest": "shorter", "fullPrompt": "y" * size}
    path = OPTIMIZE if field == "prompt" else "/api/get-custom-suggestions"
    answers = [_post(url, body, path=path) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200], answers[0].text[:300]
    kept = len(json.dumps(body)) < 10_000
    assert answers[1].headers["X-Cache-Edge"] == ("HIT" if kept else "BYPASS")
    door = answers[0].headers.get("Content-Location")
    assert (door is not None) is (len(door or "") <= 2048 and size < 1_950), door
    if door is not None:
        fetched = requests.get(url + door, timeout=30)
        assert fetched.status_code == 200 and fetched.content == answers[0].content
    long_get = requests.get(url + path + "?body=" + _door(body), timeout=30)  # any URL nginx takes
    assert long_get.status_code == (200 if len(_door(body)) < 8_000 else 414), long_get.text[:300]


def test_the_cdn_s_door_is_an_edge_entry_of_its_own(edge: tuple[str, Server]) -> None:
    """The GET a shareable POST answer names (Content-Location) is cached by its URL: the
    service answers it once, from its own cache, and the edge every time after."""
    url, server = edge
    body = {"prompt": "through the door", "mode": "socratic"}
    posted = _post(url, body)
    door = posted.headers["Content-Location"]
    before = _service_requests(server)
    first = requests.get(url + door, timeout=30)
    assert first.status_code == 200 and first.headers["X-Cache-Edge"] == "MISS"
    assert first.headers["X-Cache"] == "HIT" and first.content == posted.content
    for _ in range(2):
        again = requests.get(url + door, timeout=30)
        assert again.headers["X-Cache-Edge"] == "HIT" and again.content == posted.content
    head = requests.head(url + door, timeout=30)
    assert head.status_code == 200 and head.content == b"" and head.headers["ETag"] == posted.headers["ETag"]
    bad = [requests.get(url + OPTIMIZE + "?body=not%20json", timeout=30) for _ in range(2)]
    assert [r.status_code for r in bad] == [400, 400] and bad[1].headers.get("X-Cache-Edge") != "HIT"
    assert _service_requests(server) <= before + 4  # the door's miss, HEAD's miss at most, two errors


def test_a_graphql_get_is_kept_by_its_url_and_its_posts_pass_through(edge: tuple[str, Server]) -> None:
    """A GET query (here a persisted one: its hash in the URL) the service marks shareable is an
    edge entry; the same query POSTed is answered by the service every time."""
    url, _ = edge
    query = '{ generateQuestions(input: {prompt: "kept at the edge"}) { questions { title } } }'
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": hashlib.sha256(query.encode()).hexdigest()}}
    posted = [
        requests.post(url + "/graphql", json={"query": query, "extensions": extensions}, timeout=30) for _ in range(2)
    ]
    assert [p.headers["X-Cache-Edge"] for p in posted] == ["MISS", "MISS"]  # no-store: never kept
    address = url + "/graphql?extensions=" + quote(json.dumps(extensions), safe="")
    # Registered with one worker, known to both (the cache's L2 holds persisted queries).
    found = [requests.get(address, timeout=30) for _ in range(3)]
    assert [f.headers["X-Cache-Edge"] for f in found] == ["MISS", "HIT", "HIT"]
    assert all(f.json() == posted[0].json() for f in found)


@pytest.mark.parametrize(
    "other",
    [
        {"prompt": "distinct requests B", "mode": "code"},
        {"prompt": "distinct requests A", "mode": "research"},
        {"prompt": "distinct requests A", "mode": "code", "context": {"intendedUse": "a talk"}},
        {"prompt": "distinct requests A ", "mode": "code"},
    ],
    ids=["prompt", "mode", "extra-field", "whitespace"],
)
def test_distinct_requests_never_share_an_entry(edge: tuple[str, Server], other: dict[str, str]) -> None:
    url, server = edge
    first = _post(url, {"prompt": "distinct requests A", "mode": "code"})
    answer = _post(url, other)
    assert answer.headers["X-Cache-Edge"] == "MISS", "another request's entry answered this one"
    direct = requests.post(server.url + OPTIMIZE, json=other, timeout=30)
    assert answer.json() == direct.json()  # what the service says to this request
    if other.get("prompt") != "distinct requests A " and "context" not in other:
        assert answer.json() != first.json()


@pytest.mark.parametrize(
    ("headers", "stored"),
    [
        ({"Cache-Control": "no-cache"}, True),  # asks the service again, keeps the new answer
        ({"Cache-Control": "max-age=0"}, True),
        ({"Cache-Control": "no-store"}, False),
        ({"Authorization": "Bearer whoever"}, False),  # a credential: never the edge's
        ({"X-API-Key": "whoever"}, False),
        ({"Prefer": "respond-async"}, False),
    ],
    ids=["no-cache", "max-age-0", "no-store", "authorization", "x-api-key", "prefer"],
)
def test_what_bypasses_the_edge(edge: tuple[str, Server], headers: dict[str, str], stored: bool) -> None:
    url, _ = edge
    body = {"prompt": f"bypass {sorted(headers.items())}", "mode": "code"}
    assert _post(url, body).headers["X-Cache-Edge"] == "MISS"  # stored once
    bypassing = _post(url, body, **headers)
    assert bypassing.headers["X-Cache-Edge"] == "BYPASS"
    fresh = {"prompt": f"bypass first {sorted(headers.items())}", "mode": "code"}
    _post(url, fresh, **headers)
    after = _post(url, fresh).headers["X-Cache-Edge"]
    assert after == ("HIT" if stored else "MISS")


@pytest.mark.parametrize(
    "send",
    [{"json": {"prompt": ""}}, {"data": "{", "headers": {"Content-Type": "application/json"}}, {"data": ""}],
    ids=["invalid", "malformed", "empty"],
)
def test_errors_are_never_kept(edge: tuple[str, Server], send: dict[str, Any]) -> None:
    url, _ = edge
    statuses = [requests.post(url + OPTIMIZE, timeout=30, **send) for _ in range(2)]
    assert all(r.status_code >= 400 for r in statuses)
    assert [r.headers.get("X-Cache-Edge") for r in statuses] != ["MISS", "HIT"]
    assert all(r.headers.get("X-Cache-Edge") != "HIT" for r in statuses)


def test_with_api_keys_the_edge_answers_nothing_the_service_would_refuse(tmp_path: Path) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text('[keys.alice]\nsecret = "alice-secret"\n[keys.bob]\nsecret = "bob-secret"\n')
    body = {"prompt": "a key's own answer", "mode": "code"}
    with (
        start_server({"TRUSTED_PROXIES": "1", "API_KEYS_FILE": str(keys), "RATE_LIMIT": ""}, workers=1) as server,
        nginx([server.url.removeprefix("http://")], need_binary("nginx")) as url,
    ):
        for _ in range(2):
            kept = _post(url, body, **{"X-API-Key": "alice-secret"})
            assert kept.status_code == 200 and kept.headers["X-Cache-Edge"] == "BYPASS"
            assert kept.headers["Cache-Control"] == "no-store"
        refusals = {
            "no key": _post(url, body),
            "wrong key": _post(url, body, **{"X-API-Key": "not-a-key"}),
            "wrong bearer": _post(url, body, Authorization="Bearer not-a-key"),
            "door, no key": requests.get(url + OPTIMIZE + "?body=" + _door(body), timeout=30),
            "door, wrong key": requests.get(
                url + OPTIMIZE + "?body=" + _door(body), headers={"X-API-Key": "not-a-key"}, timeout=30
            ),
        }
        for name, refused in refusals.items():
            assert refused.status_code in (401, 403), name  # the service's own refusal
            assert refused.headers["X-Cache-Edge"] != "HIT", name
        assert _post(url, body, **{"X-API-Key": "bob-secret"}).status_code == 200
        keys.write_text('[keys.alice]\nsecret = "alice-secret"\n')  # bob revoked: workers reloaded
        os.kill(server.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 60
        while _post(url, body, **{"X-API-Key": "bob-secret"}).status_code not in (401, 403):
            assert time.monotonic() < deadline, "the revoked key was still answered"
            time.sleep(0.2)
        assert _post(url, body).status_code == 401  # and still nothing without a key


def test_edge_hits_and_misses_reach_prometheus_through_mtail(edge: tuple[str, Server]) -> None:
    """nginx's edge log, read by mtail with prometheus/edge.mtail: each request counted by its
    cache status, operation and status, in Prometheus's text format."""
    from prometheus_client.parser import text_string_to_metric_families

    _, server = edge
    with (
        tempfile.TemporaryDirectory() as workdir,
        nginx([server.url.removeprefix("http://")], need_binary("nginx"), workdir=workdir) as url,
        mtail(need_binary("mtail"), f"{workdir}/{EDGE_LOG}") as exporter,
    ):
        body = {"prompt": "counted at the edge", "mode": "code"}
        sent = [_post(url, body), _post(url, body), _post(url, body), _post(url, body, **{"X-API-Key": "k"})]
        sent.append(_post(url, {"prompt": ""}, path="/api/generate-questions"))
        assert [r.headers["X-Cache-Edge"] for r in sent] == ["MISS", "HIT", "HIT", "BYPASS", "MISS"]
        expected = {
            ("MISS", "optimize", "200"): 1,
            ("HIT", "optimize", "200"): 2,
            ("BYPASS", "optimize", "200"): 1,
            ("MISS", "generate-questions", "400"): 1,
        }

        def counted() -> dict[tuple[str, str, str], float]:
            text = requests.get(exporter + "/metrics", timeout=5).text
            return {
                (s.labels["cache"], s.labels["operation"], s.labels["status"]): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name in ("edge_requests_total", "edge_requests")
            }

        deadline = time.monotonic() + 30
        while counted() != expected:
            assert time.monotonic() < deadline, counted()
            time.sleep(0.1)


def test_a_purge_as_documented_takes_effect(edge: tuple[str, Server]) -> None:
    """docs/edge.md's purges on a running nginx: one prompt's entries by grep, then everything;
    each purged answer is asked of the service again (a miss), the others still hit."""
    _, server = edge
    with (
        tempfile.TemporaryDirectory() as cache,
        nginx([server.url.removeprefix("http://")], need_binary("nginx"), edge=cache) as url,
    ):
        kept, dropped = {"prompt": "kept through a purge", "mode": "code"}, {"prompt": "purged", "mode": "code"}
        for body in (kept, dropped, kept, dropped):
            _post(url, body)
        subprocess.run(f'grep -rlE --null \'"prompt": ?"purged"\' {cache} | xargs -0 rm -f', shell=True, check=True)
        assert _post(url, dropped).headers["X-Cache-Edge"] == "MISS"
        assert _post(url, kept).headers["X-Cache-Edge"] == "HIT"
        subprocess.run(["find", cache, "-type", "f", "-delete"], check=True)
        assert [_post(url, body).headers["X-Cache-Edge"] for body in (kept, dropped)] == ["MISS", "MISS"]
        assert [_post(url, body).headers["X-Cache-Edge"] for body in (kept, dropped)] == ["HIT", "HIT"]
