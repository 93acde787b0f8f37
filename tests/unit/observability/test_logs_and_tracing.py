"""The JSON access log (one line per request, never the prompt), request ids, and the tracing
setup chosen from settings."""

from __future__ import annotations

import calendar
import io
import json
import logging
import re
import time
from typing import Any

import pytest
from flask import Flask
from opentelemetry.sdk.trace import sampling

from app.exchange import Exchange, enter, leave
from app.observability.logs import JSONFormatter
from app.observability.tracing import _decider, _edge_sampler, sampler
from app.parts import parts_of
from config.settings import load_settings
from tests.support import make_app


def _lines(app: Flask) -> io.StringIO:
    """Point the app's access log at a buffer; its lines are read back from it."""
    buffer = io.StringIO()
    parts_of(app).access.stream = buffer
    return buffer


def _parsed(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_one_access_line_per_request_without_the_prompt() -> None:
    app = make_app({"LOG_LEVEL": "INFO"})
    buffer = _lines(app)
    secret = "a prompt that must not be logged 81c2"
    response = app.test_client().post(
        "/api/optimize", json={"prompt": secret, "mode": "code"}, headers={"X-Request-ID": "r-1"}
    )
    assert response.headers["X-Request-ID"] == "r-1"
    lines = _parsed(buffer)
    assert len(lines) == 1
    line = lines[0]
    assert secret not in json.dumps(line)
    assert {k: line[k] for k in ("message", "method", "endpoint", "status", "request_id", "cache", "provider")} == {
        "message": "request",
        "method": "POST",
        "endpoint": "optimize.optimize",
        "status": 200,
        "request_id": "r-1",
        "cache": "MISS",
        "provider": "template",
    }
    assert line["duration_ms"] > 0 and line["trace_id"] is None and line["level"] == "info"


def test_an_access_line_has_the_envelope_of_every_other_log_line() -> None:
    """The access log writes its lines itself (not through `logging`): same keys, same order,
    same time format as a line the JSON formatter writes."""
    app = make_app({"LOG_LEVEL": "INFO"})
    buffer = _lines(app)
    app.test_client().get("/health", headers={"X-Request-ID": "r-2"})
    record = logging.makeLogRecord({"name": "app.access", "levelname": "INFO", "msg": "request", "status": 200})
    formatted = json.loads(JSONFormatter().format(record))
    (line,) = _parsed(buffer)
    assert list(line)[:4] == list(formatted)[:4] == ["time", "level", "logger", "message"]
    envelope = ("level", "logger", "message")
    assert {k: line[k] for k in envelope} == {k: formatted[k] for k in envelope}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert abs(time.time() - calendar.timegm(time.strptime(line["time"][:19], "%Y-%m-%dT%H:%M:%S"))) < 5
    assert line["request_id"] == "r-2" and line["endpoint"] == "health.health"


def test_no_access_line_above_info() -> None:
    app = make_app({"LOG_LEVEL": "WARNING"})
    buffer = _lines(app)
    app.test_client().get("/health")
    assert buffer.getvalue() == ""


@pytest.mark.parametrize("incoming", ["", "has space", "x" * 129, "semi;colon", "ünï"])
def test_unsafe_request_ids_are_replaced(incoming: str) -> None:
    client = make_app().test_client()
    echoed = client.get("/health", headers={"X-Request-ID": incoming}).headers["X-Request-ID"]
    assert echoed != incoming and re.fullmatch(r"[0-9a-f]{32}", echoed)


@pytest.mark.parametrize(
    ("name", "arg", "kind", "ratio"),
    [
        ("always_on", "1", sampling.StaticSampler, None),
        ("traceidratio", "0.1", sampling.TraceIdRatioBased, 0.1),
        ("parentbased_traceidratio", "0.25", sampling.ParentBased, 0.25),
        ("parentbased_always_off", "1", sampling.ParentBased, None),
    ],
)
def test_sampler_from_settings(name: str, arg: str, kind: type, ratio: float | None) -> None:
    built = sampler(load_settings({"OTEL_TRACES_SAMPLER": name, "OTEL_TRACES_SAMPLER_ARG": arg}))
    assert isinstance(built, kind)
    if ratio is not None:
        root = built._root if isinstance(built, sampling.ParentBased) else built  # type: ignore[attr-defined]
        assert root.rate == ratio


def test_tracing_off_means_no_tracer_provider() -> None:
    assert parts_of(make_app()).tracing is None


@pytest.mark.parametrize(
    ("name", "arg", "environ", "traced"),
    [
        ("parentbased_traceidratio", "0", {"HTTP_TRACEPARENT": f"00-{'a' * 32}-{'b' * 16}-01"}, True),
        ("parentbased_traceidratio", "1", {"HTTP_TRACEPARENT": f"00-{'a' * 32}-{'b' * 16}-00"}, False),
        ("parentbased_always_on", "1", {"HTTP_TRACEPARENT": "00-not-a-traceparent"}, True),  # malformed: a root
        ("parentbased_always_on", "1", {"HTTP_TRACEPARENT": f"00-{'a' * 32}-{'b' * 16}-zz"}, True),
        ("traceidratio", "0", {"HTTP_TRACEPARENT": f"00-{'a' * 32}-{'b' * 16}-01"}, False),  # not parent-based
        ("always_on", "1", {}, True),
        ("always_off", "1", {}, False),
        ("parentbased_always_on", "1", {"PATH_INFO": "/health/live"}, False),
        ("parentbased_always_on", "1", {"PATH_INFO": "/metrics"}, False),
    ],
)
def test_the_edge_decides_from_the_parent_then_the_ratio(
    name: str, arg: str, environ: dict[str, str], traced: bool
) -> None:
    decide = _decider(load_settings({"OTEL_TRACES_SAMPLER": name, "OTEL_TRACES_SAMPLER_ARG": arg}))
    assert decide({"PATH_INFO": "/api/optimize", **environ}) is traced


def test_the_edge_ratio_is_a_ratio_of_requests() -> None:
    decide = _decider(load_settings({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}))
    sampled = sum(decide({"PATH_INFO": "/api/optimize"}) for _ in range(20_000))
    assert 4_400 <= sampled <= 5_600  # Binomial(20000, 0.25): mean 5000, sd 61


@pytest.mark.parametrize("name", ["traceidratio", "parentbased_traceidratio"])
def test_spans_follow_the_edge_in_a_request_and_the_sampler_outside(name: str) -> None:
    """In a request the edge has decided (the SDK must not sample the request's root again);
    outside requests — a stream's producer — the configured ratio decides (0 here)."""
    from opentelemetry.sdk.trace.sampling import Decision

    edge_sampler = _edge_sampler(load_settings({"OTEL_TRACES_SAMPLER": name, "OTEL_TRACES_SAMPLER_ARG": "0"}))

    def decision(traced: bool | None) -> Decision:
        trace_id = 0x0AF7651916CD43DD8448EB211C80319C
        if traced is None:
            return edge_sampler.should_sample(None, trace_id, "outside").decision
        token = enter(Exchange({}, "request-1", 0.0, traced=traced))
        try:
            return edge_sampler.should_sample(None, trace_id, "inside").decision
        finally:
            leave(token)

    assert decision(None) == Decision.DROP
    assert decision(True) == Decision.RECORD_AND_SAMPLE
    assert decision(False) == Decision.DROP
