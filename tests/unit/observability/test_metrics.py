"""Metrics recorded by one app (no gunicorn): counters agree with the cache's own state."""

from __future__ import annotations

import io
import json

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from app.parts import parts_of
from tests.support import make_app


def _samples(app: Flask) -> dict[str, float]:
    text = app.test_client().get("/metrics").get_data(as_text=True)
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


def _optimize(app: Flask, prompt: str) -> str:
    response = app.test_client().post("/api/optimize", json={"prompt": prompt, "mode": "code"})
    assert response.status_code == 200
    return response.headers["X-Cache"]


def test_sets_count_what_the_cache_stored() -> None:
    app = make_app()
    assert [_optimize(app, p) for p in ("one", "two", "three", "one")] == ["MISS", "MISS", "MISS", "HIT"]
    samples = _samples(app)
    l1 = parts_of(app).prompts.gateway.l1
    assert samples["cache_sets_total"] == len(l1) == samples["cache_entries"] == 3
    assert samples["cache_bytes"] == l1.bytes


def test_an_answer_too_big_for_the_cache_is_not_counted_as_stored() -> None:
    app = make_app({"CACHE_MAX_BYTES": "100"})  # smaller than any answer
    assert [_optimize(app, p) for p in ("one", "one")] == ["MISS", "MISS"]
    samples = _samples(app)
    assert samples["cache_sets_total"] == 0 == len(parts_of(app).prompts.gateway.l1)


DOCUMENTED = [
    "cache_bytes",
    "cache_evictions_total",
    "cache_hits_total",
    "cache_misses_total",
    "circuit_breaker_state",
    "claude_api_calls_total",
    "claude_api_duration_seconds_count",
    "claude_cost_usd_total",
    "claude_tokens_total",
    "coalesced_requests_total",
    "coalescing_waiting_requests",
    "gateway_overhead_seconds_count",
    "http_request_duration_seconds_count",
    "http_requests_total",
    "rate_limited_requests_total",
    "redis_errors_total",
    "stale_responses_total",
    "upstream_retries_total",
    "cache_sets_total",
    "cache_entries",
    "coalescing_in_flight",
    "circuit_breaker_failures",
]


def test_a_fresh_server_exports_every_documented_series_at_zero() -> None:
    text = make_app().test_client().get("/metrics").get_data(as_text=True)
    series: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, []).append((sample.labels, sample.value))
    missing = [name for name in DOCUMENTED if not series.get(name)]
    assert not missing, f"no series at start-up: {missing}"
    nonzero = [(name, labels) for name in DOCUMENTED for labels, value in series[name] if value != 0]
    assert not nonzero
    # The label values dashboards select on are there, e.g. per scope and per namespace:
    coalesced = {(lab["type"], lab["cache_type"]) for lab, _ in series["coalesced_requests_total"]}
    assert {("worker", "optimize"), ("cluster", "optimize"), ("worker", "scene")} <= coalesced
    assert {lab["endpoint"] for lab, _ in series["rate_limited_requests_total"]} >= {"optimize.optimize"}


@pytest.mark.parametrize("shortcut", [True, False], ids=["pipeline", "flask"])
def test_request_facts_come_with_the_answer_and_do_not_need_metrics(fake_upstream, shortcut: bool) -> None:  # type: ignore[no-untyped-def]
    """Tokens and upstream time reach Server-Timing and the log with METRICS_ENABLED=false, from
    the answer its handler returned (the pipeline's shortcut, or Flask's view): a miss spent the
    model's tokens and waited on it; the same request's hit spent none and waited on nothing."""
    from app.pipeline import pipeline_of

    app = make_app(
        {
            "LOG_LEVEL": "INFO",
            "METRICS_ENABLED": "false",
            "ANTHROPIC_API_KEY": "sk-ant-test",
            "ANTHROPIC_BASE_URL": fake_upstream.url,
        }
    )
    pipeline_of(app).shortcut = shortcut
    log = parts_of(app).access.stream = io.StringIO()
    body = {"prompt": f"facts {shortcut}", "mode": "code"}
    miss, hit = (app.test_client().post("/api/optimize", json=body) for _ in range(2))
    assert (miss.headers["X-Cache"], hit.headers["X-Cache"]) == ("MISS", "HIT")
    assert app.test_client().get("/metrics").status_code == 404  # metrics really are off
    upstream = fake_upstream.stats()["tokens"]
    missed, hitting = (json.loads(line) for line in log.getvalue().splitlines()[:2])
    assert (missed["input_tokens"], missed["output_tokens"]) == (upstream["input"], upstream["output"])
    assert missed["input_tokens"] > 0 and missed["upstream_ms"] > 0 and missed["cache"] == "MISS"
    assert (hitting["input_tokens"], hitting["output_tokens"], hitting["upstream_ms"]) == (0, 0, 0)
    assert hitting["cache"] == "HIT"
    assert "upstream;dur=" in miss.headers["Server-Timing"] and "cache;dur=" in miss.headers["Server-Timing"]
    assert "upstream;dur=" not in hit.headers["Server-Timing"] and "cache;dur=" in hit.headers["Server-Timing"]
