"""The CDN's door: each operation answers a GET whose URL carries its request
(`?body=<the JSON body, URL-encoded>`), the same request through the same pipeline; a shareable
POST answer names that GET in Content-Location. Run with the pipeline's shortcut and through
Flask (conftest)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from flask.testing import FlaskClient

from app.api._edge import DOOR_LIMIT
from tests.support import make_app
from tests.unit.api.test_http_caching import SHAREABLE, _calls
from tests.unit.api.test_validation import VALID


def _door(body: dict[str, Any] | bytes | str) -> str:
    raw = json.dumps(body) if isinstance(body, dict) else body
    return quote(raw, safe="")


@pytest.mark.parametrize("path", sorted(VALID))
def test_the_door_of_a_post_answers_the_same_bytes_from_the_cache(client: FlaskClient, path: str) -> None:
    posted = client.post(path, json=VALID[path])
    assert posted.status_code == 200 and SHAREABLE.match(posted.headers["Cache-Control"])
    location = posted.headers["Content-Location"]
    assert location.startswith(path + "?body=")
    made = _calls(client)
    fetched = client.get(location)
    assert fetched.status_code == 200 and fetched.headers["X-Cache"] == "HIT"
    assert fetched.data == posted.data and fetched.headers["ETag"] == posted.headers["ETag"]
    assert SHAREABLE.match(fetched.headers["Cache-Control"])
    assert "Content-Location" not in fetched.headers  # a GET is its own address
    head = client.head(location)
    assert head.status_code == 200 and head.data == b"" and head.headers["Content-Length"] == str(len(posted.data))
    condition = client.get(location, headers={"If-None-Match": posted.headers["ETag"]})
    assert condition.status_code == 304 and condition.data == b""
    assert _calls(client) == made  # the door costs no model call


def test_a_get_first_is_a_miss_then_the_post_hits_it(client: FlaskClient) -> None:
    body = {"prompt": "asked first by its URL", "mode": "video"}
    fetched = client.get("/api/optimize?body=" + _door(body))
    assert fetched.status_code == 200 and fetched.headers["X-Cache"] == "MISS"
    posted = client.post("/api/optimize", json=body)
    assert posted.headers["X-Cache"] == "HIT" and posted.data == fetched.data
    assert _calls(client) == 1


@pytest.mark.parametrize(
    "spell",
    [
        lambda body: json.dumps(body),
        lambda body: json.dumps(body, indent=4),
        lambda body: json.dumps(dict(reversed(list(body.items())))),
        lambda body: json.dumps(body, separators=(",", ":")),
        lambda body: json.dumps(body, ensure_ascii=True) + "\n",
    ],
    ids=["plain", "indented", "reordered", "compact", "trailing-newline"],
)
def test_every_spelling_of_one_request_names_one_door(client: FlaskClient, spell: Any) -> None:
    body = {"prompt": "one request, café", "mode": "research", "context": {"intendedUse": "a talk"}}
    canonical = client.post("/api/optimize", json=body).headers["Content-Location"]
    spelled = client.post("/api/optimize", data=spell(body), content_type="application/json")
    assert spelled.headers["Content-Location"] == canonical


def test_different_requests_never_share_a_door(client: FlaskClient) -> None:
    bodies = [
        {"prompt": "p", "mode": "code"},
        {"prompt": "p", "mode": "video"},
        {"prompt": "P", "mode": "code"},
        {"prompt": "p", "mode": "code", "context": {"intendedUse": "x"}},
    ]
    doors = [client.post("/api/optimize", json=body).headers["Content-Location"] for body in bodies]
    answers = [client.get(door).data for door in doors]
    assert len(set(doors)) == len(bodies) and len(set(answers)) == len(bodies)


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("", 400),  # no request at all
        ("body=", 400),  # an empty document
        ("body", 400),
        ("prompt=x&mode=code", 400),
        ("body=" + _door({"prompt": "x"}) + "&x=1", 400),  # one parameter, nothing else
        ("x=1&body=" + _door({"prompt": "x"}), 400),
        ("body=" + _door({"prompt": "x"}) + "&body=" + _door({"prompt": "y"}), 400),
        ("body=" + _door(b"\xff\xfe not utf-8"), 400),
        ("body=%E2%28%A1", 400),  # an invalid UTF-8 sequence, percent-encoded
        ("body=" + _door("{not json"), 400),
        ("body=" + _door("[1, 2]"), 400),
        ("body=" + _door('{"prompt": NaN}'), 400),
        ("body=" + _door({"prompt": "x", "mode": "nope"}), 400),
        ("body=" + _door({"prompt": "x", "unknown": 1}), 400),
        ("body=" + "%5B" * 100_000 + "1", 400),  # nesting too deep
        ("body=" + "a" * (2 * 1024 * 1024), 413),  # over MAX_BODY_BYTES
        ("body=" + "%41" * (1024 * 1024 + 10), 413),  # over MAX_BODY_BYTES once decoded
    ],
    ids=lambda value: value[:24] if isinstance(value, str) else str(value),
)
def test_a_bad_door_gets_a_json_error_never_a_model_call(client: FlaskClient, query: str, status: int) -> None:
    answer = client.get("/api/optimize?" + query)
    assert answer.status_code == status, answer.data[:300]
    body = answer.get_json()
    assert set(body) == {"error", "details", "requestId"} and body["details"]
    assert answer.headers["Cache-Control"] == "no-store"
    assert _calls(client) == 0


@pytest.mark.parametrize(
    "spell",
    [
        lambda raw: quote(raw, safe=""),
        lambda raw: quote(raw, safe='{}:,"'),  # fewer characters encoded
        lambda raw: quote_plus(raw),  # form encoding: a space is "+"
        lambda raw: quote(raw, safe="").lower(),  # lower-case hex (and letters: the JSON is lower-case)
    ],
    ids=["all", "fewer", "plus", "lower-hex"],
)
def test_every_url_encoding_of_a_request_reads_as_that_request(client: FlaskClient, spell: Any) -> None:
    raw = json.dumps({"prompt": "an encoded request, café", "mode": "code"})
    expected = client.post("/api/optimize", data=raw, content_type="application/json")
    answer = client.get("/api/optimize?body=" + spell(raw))
    assert answer.status_code == 200 and answer.data == expected.data


@pytest.mark.parametrize(
    ("headers", "settings"),
    [
        ({"Cache-Control": "no-store"}, {}),  # not shareable: no door
        ({"X-API-Key": "k1"}, {"API_KEYS": "k1"}),  # a key's answer is its own
    ],
    ids=["no-store", "key"],
)
def test_an_answer_that_may_not_be_shared_names_no_door(headers: dict[str, str], settings: dict[str, str]) -> None:
    client = make_app(settings).test_client()
    answer = client.post("/api/optimize", json={"prompt": "mine", "mode": "code"}, headers=headers)
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    assert "Content-Location" not in answer.headers


def test_a_key_is_needed_at_the_door_as_at_the_post() -> None:
    client = make_app({"API_KEYS": "k1"}).test_client()
    door = "/api/optimize?body=" + _door({"prompt": "locked", "mode": "code"})
    assert client.get(door).status_code == 401
    assert client.get(door, headers={"X-API-Key": "wrong"}).status_code == 403
    keyed = client.get(door, headers={"X-API-Key": "k1"})
    assert keyed.status_code == 200 and keyed.headers["Cache-Control"] == "no-store"


def test_a_request_too_long_for_a_url_gets_no_door(client: FlaskClient) -> None:
    fits = {"prompt": "x" * 1900, "mode": "code"}
    too_long = {"prompt": "x" * 2100, "mode": "code"}
    door = client.post("/api/optimize", json=fits).headers["Content-Location"]
    assert len(door) <= DOOR_LIMIT and client.get(door).status_code == 200
    answer = client.post("/api/optimize", json=too_long)
    assert answer.status_code == 200 and SHAREABLE.match(answer.headers["Cache-Control"])
    assert "Content-Location" not in answer.headers


def test_a_get_is_never_a_job(tmp_path: Path) -> None:
    client = make_app({"CACHE_DIR": str(tmp_path)}).test_client()  # jobs kept on this machine
    body = {"prompt": "now, not later", "mode": "code"}
    asked = {"Prefer": "respond-async"}
    assert client.post("/api/optimize", json=body, headers=asked).status_code == 202
    answer = client.get("/api/optimize?body=" + _door(body), headers=asked)
    assert answer.status_code == 200 and answer.get_json()["optimizedPrompt"]
    assert "Preference-Applied" not in answer.headers
