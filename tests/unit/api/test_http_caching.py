"""HTTP caching semantics a shared cache can act on (RFC 9111): what may be shared says so with
its remaining freshness and a strong ETag, everything else is no-store, and If-None-Match gets
304 without a model call. Run with the pipeline's shortcut and through Flask (conftest)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.support import make_app

BODY = {"prompt": "an answer to share", "mode": "code"}
SHAREABLE = re.compile(r"^public, max-age=0, s-maxage=(\d+), stale-while-revalidate=30, stale-if-error=86400$")


def _calls(client: FlaskClient) -> float:
    """Model calls this app made (its provider is the offline builder), as /metrics counts them."""
    text = client.get("/metrics").get_data(as_text=True)
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("claude_api_calls_total{")
    )


def test_a_fresh_answer_is_shareable_for_its_remaining_freshness_with_a_strong_etag(client: FlaskClient) -> None:
    first = client.post("/api/optimize", json=BODY)
    assert first.status_code == 200 and first.headers["X-Cache"] == "MISS"
    found = SHAREABLE.match(first.headers["Cache-Control"])
    assert found is not None, first.headers["Cache-Control"]
    assert 0 < int(found.group(1)) <= 3600  # the mode's TTL at most (CACHE_DEFAULT_TTL)
    etag = first.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)  # strong: no W/
    hit = client.post("/api/optimize", json=BODY)
    assert hit.headers["X-Cache"] == "HIT" and hit.headers["ETag"] == etag  # the same bytes, the same tag
    assert SHAREABLE.match(hit.headers["Cache-Control"])
    other = client.post("/api/optimize", json={**BODY, "prompt": "another answer"})
    assert other.headers["ETag"] != etag


@pytest.mark.parametrize(
    "spell",
    [
        lambda tag: tag,
        lambda tag: "W/" + tag,  # weak comparison: a gzipping proxy weakens the tag it passes on
        lambda tag: f'"0000", {tag}',
        lambda tag: f'  {tag} ,"1111"',
        lambda tag: "*",
    ],
    ids=["exact", "weakened", "in-a-list", "spaced", "any"],
)
def test_if_none_match_naming_the_answer_gets_304_without_a_model_call(client: FlaskClient, spell: Any) -> None:
    tag = client.post("/api/optimize", json=BODY).headers["ETag"]
    made = _calls(client)
    assert made == 1
    answer = client.post("/api/optimize", json=BODY, headers={"If-None-Match": spell(tag)})
    assert answer.status_code == 304 and answer.data == b""
    assert answer.headers["ETag"] == tag and SHAREABLE.match(answer.headers["Cache-Control"])
    assert "Content-Type" not in answer.headers and answer.headers["X-Cache"] == "HIT"
    assert _calls(client) == made


@pytest.mark.parametrize("condition", ['"0000"', 'W/"1111", "2222"', '""'])
def test_if_none_match_naming_another_answer_gets_the_answer(client: FlaskClient, condition: str) -> None:
    answer = client.post("/api/optimize", json=BODY, headers={"If-None-Match": condition})
    assert answer.status_code == 200 and answer.json is not None and answer.json["optimizedPrompt"]


@pytest.mark.parametrize(
    ("request_control", "shareable"),
    [("no-store", False), ("no-cache", True), ("max-age=600", True), ("no-cache, no-store", False)],
)
def test_a_requests_cache_control_decides_whether_its_answer_may_be_shared(
    client: FlaskClient, request_control: str, shareable: bool
) -> None:
    answer = client.post("/api/optimize", json=BODY, headers={"Cache-Control": request_control})
    assert answer.status_code == 200
    assert bool(SHAREABLE.match(answer.headers["Cache-Control"])) is shareable, answer.headers["Cache-Control"]
    if not shareable:
        assert answer.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    "send",
    [
        {"path": "/api/optimize", "json": {"prompt": ""}},  # 400
        {"path": "/api/optimize", "data": "x", "content_type": "text/plain"},  # 415
        {"path": "/api/nowhere", "json": BODY},  # 404
        {"path": "/api/optimize", "method": "PUT"},  # 405
        {"path": "/health"},
        {"path": "/api/modes", "method": "GET"},
    ],
    ids=["invalid", "media-type", "not-found", "method", "health", "modes"],
)
def test_errors_and_everything_not_marked_are_never_shared(client: FlaskClient, send: dict[str, Any]) -> None:
    send = dict(send)
    answer = client.open(send.pop("path"), method=send.pop("method", "POST"), **send)
    assert answer.headers["Cache-Control"] == "no-store", (answer.status_code, answer.headers)


def test_an_authenticated_answer_is_never_shared_but_still_revalidates() -> None:
    client = make_app({"API_KEYS": "k1"}).test_client()
    answer = client.post("/api/optimize", json=BODY, headers={"X-API-Key": "k1"})
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    again = client.post(
        "/api/optimize", json=BODY, headers={"X-API-Key": "k1", "If-None-Match": answer.headers["ETag"]}
    )
    assert again.status_code == 304 and again.headers["Cache-Control"] == "no-store"
