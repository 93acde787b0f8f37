"""Cached answers on a real gunicorn, through the one request pipeline (app.pipeline): a hit is
answered alike whatever request headers that change nothing it carries, with one access line and
one count each, and every request counts into one rate-limit window in Redis."""

from __future__ import annotations

import json

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support import redis_env, redis_server, start_server

pytestmark = pytest.mark.integration

BODY = {"prompt": "Explain the CAP theorem with one example", "mode": "reasoning"}
PER_REQUEST = {"Date", "X-Request-ID", "Server-Timing", "RateLimit-Remaining", "RateLimit-Reset", "Age"}


def _access_lines(output: str) -> list[dict[str, object]]:
    return [line for line in map(_json, output.splitlines()) if line.get("logger") == "app.access"]


def _json(line: str) -> dict[str, object]:
    try:
        parsed = json.loads(line)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def test_hits_are_answered_alike_and_counted_once_each() -> None:
    settings = {"LOG_LEVEL": "INFO", "RATE_LIMIT": "1000/minute", "CORS_ORIGINS": "https://ui.example"}
    with start_server(settings) as server, requests.Session() as session:
        url, origin = server.url + "/api/optimize", {"Origin": "https://ui.example"}
        assert session.post(url, json=BODY, timeout=10).headers["X-Cache"] == "MISS"
        # A Cache-Control request header that changes nothing changes nothing in the answer.
        flask = session.post(url, json=BODY, headers={**origin, "Cache-Control": "max-age=600"}, timeout=10)
        ours = session.post(url, json=BODY, headers=origin, timeout=10)  # the same connection, kept alive

        assert flask.status_code == ours.status_code == 200
        assert flask.headers["X-Cache"] == ours.headers["X-Cache"] == "HIT"
        assert ours.content == flask.content and ours.json()["optimizedPrompt"]
        assert sorted(ours.headers) == sorted(flask.headers)
        for name in set(flask.headers) - PER_REQUEST:
            assert ours.headers[name] == flask.headers[name], name
        assert int(ours.headers["RateLimit-Remaining"]) == int(flask.headers["RateLimit-Remaining"]) - 1
        answered = {
            sample.labels["status"]: sample.value
            for family in text_string_to_metric_families(session.get(server.url + "/metrics", timeout=10).text)
            for sample in family.samples
            if sample.name == "http_requests_total" and sample.labels["endpoint"] == "optimize.optimize"
        }
        assert answered == {"200": 3.0}

        lines = [line for line in _access_lines(server.output()) if line["endpoint"] == "optimize.optimize"]
        assert [line["cache"] for line in lines] == ["MISS", "HIT", "HIT"]
        assert lines[1].keys() == lines[2].keys()
        assert lines[2]["request_id"] == ours.headers["X-Request-ID"]


def test_every_request_counts_into_one_shared_window_in_redis() -> None:
    """Two workers sharing Redis: hits, and requests with a Cache-Control header, count against
    one window, whichever worker answers."""
    with redis_server() as redis_url, start_server({**redis_env(redis_url), "RATE_LIMIT": "6/minute"}, 2) as server:
        url = server.url + "/api/optimize"
        statuses, caches = [], []
        for i in range(8):
            headers = {"Cache-Control": "max-age=600"} if i % 3 == 0 else {}  # every third with a header
            response = requests.post(url, json=BODY, headers=headers, timeout=10)
            statuses.append(response.status_code)
            caches.append(response.headers.get("X-Cache"))
        assert statuses == [200] * 6 + [429, 429]
        assert "HIT" in caches[1:6]
