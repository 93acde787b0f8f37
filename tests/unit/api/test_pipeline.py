"""The request pipeline (app.pipeline): what a caller and an operator see of an answer is the
same whether a JSON endpoint's handler runs as the pipeline's shortcut or through Flask's
routing and view; and a fault in the pipeline's own steps answers JSON 500, counted once."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from flask import Flask
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from app.parts import parts_of
from app.pipeline import pipeline_of
from tests.support import make_app
from tests.unit.api.test_validation import VALID

# Values that differ between any two requests, whichever path answers them.
PER_REQUEST = {"X-Request-ID", "Server-Timing", "RateLimit-Remaining", "RateLimit-Reset", "Age"}
LINE_PER_REQUEST = {"time", "duration_ms", "request_id", "trace_id", "upstream_ms"}
SETTINGS = {
    "APP_ENV": "testing",
    "LOG_LEVEL": "INFO",
    "RATE_LIMIT": "1000/minute",
    "CORS_ORIGINS": "https://ui.example",
}


def _app(shortcut: bool, **settings: str) -> tuple[Flask, io.StringIO]:
    app = make_app({**SETTINGS, **settings})
    found = parts_of(app)
    pipeline_of(app).shortcut = shortcut
    log = found.access.stream = io.StringIO()
    return app, log


def _lines(log: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.getvalue().splitlines()]


def _series(app: Flask) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = parts_of(app).instruments.registry  # type: ignore[union-attr]
    from prometheus_client import generate_latest

    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        # counts only: times (sums, buckets, creation stamps) differ between any two runs
        if not sample.name.startswith("process_") and not sample.name.endswith(("_created", "_sum", "_bucket"))
    }


def _seen(shortcut: bool, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """Everything observable of a miss then a hit of `path`: statuses, bodies, header names and
    fixed values in order, access-line fields, and the metrics afterwards."""
    app, log = _app(shortcut)
    client = app.test_client()
    headers = {"Origin": "https://ui.example", "X-Request-ID": "caller-id-1"}
    answers = [client.post(path, json=body, headers=headers) for _ in range(2)]
    return {
        "statuses": [a.status_code for a in answers],
        "bodies": [a.get_json() for a in answers],
        "headers": [[(k, "*" if k in PER_REQUEST else v) for k, v in a.headers.items()] for a in answers],
        "lines": [{k: v for k, v in line.items() if k not in LINE_PER_REQUEST} for line in _lines(log)],
        "series": _series(app),
    }


@pytest.mark.parametrize("path", sorted(VALID))
def test_the_shortcut_and_flasks_view_answer_alike(path: str) -> None:
    via_flask = _seen(False, path, VALID[path])
    shortcut = _seen(True, path, VALID[path])
    assert shortcut == via_flask
    assert [dict(h)["X-Cache"] for h in shortcut["headers"]] == ["MISS", "HIT"]
    assert shortcut["headers"][1][-1] == ("X-Request-ID", "*")  # the pipeline's last header
    assert [line["cache"] for line in shortcut["lines"]] == ["MISS", "HIT"]
    assert len(shortcut["lines"]) == 2


@pytest.mark.parametrize("shortcut", [True, False])
def test_errors_are_alike_on_both_paths(shortcut: bool) -> None:
    app, log = _app(shortcut)
    client = app.test_client()
    bad = client.post("/api/optimize", data="{", content_type="application/json")
    media = client.post("/api/optimize", data="x", content_type="text/plain")
    assert (bad.status_code, media.status_code) == (400, 415)
    assert bad.get_json()["error"] == "Malformed JSON" and bad.get_json()["requestId"] == bad.headers["X-Request-ID"]
    assert [line["status"] for line in _lines(log)] == [400, 415]


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()  # the apps' tracing is shut down with them (tests/support.stop_apps)


def _traced_app(shortcut: bool, exporter: InMemorySpanExporter) -> Flask:
    app, _ = _app(
        shortcut,
        APP_ENV="development",  # tracing on with the console exporter (no collector to run)
        CACHE_DIR="",  # development's default is the user's disk cache: each app here starts empty
        OTEL_TRACES_SAMPLER="always_on",
        OTEL_BSP_SCHEDULE_DELAY="600000",
    )
    tracing = parts_of(app).tracing
    assert tracing is not None
    tracing.provider.add_span_processor(SimpleSpanProcessor(exporter))
    return app


def _shape(span: ReadableSpan) -> tuple[str, str, tuple[tuple[str, Any], ...]]:
    keep = ("http.route", "http.request.header.x_request_id", "cache.status", "cache.namespace")
    attributes = sorted((k, v) for k, v in (span.attributes or {}).items() if k in keep)
    return span.name, "child" if span.parent else "root", tuple(attributes)


@pytest.mark.parametrize("path", ["/api/optimize", "/api/generate-questions"])
def test_spans_are_alike_on_both_paths(path: str, spans: InMemorySpanExporter) -> None:
    shapes = {}
    for shortcut in (False, True):
        spans.clear()
        client = _traced_app(shortcut, spans).test_client()
        for _ in range(2):
            client.post(path, json=VALID[path], headers={"X-Request-ID": "rid-1"})
        shapes[shortcut] = sorted(_shape(span) for span in spans.get_finished_spans())
    assert shapes[True] == shapes[False]
    route = (("http.request.header.x_request_id", "rid-1"), ("http.route", path))
    miss, hit = (
        ("POST " + path, "root", (("cache.status", "miss"), *route)),
        (
            "POST " + path,
            "root",
            (("cache.status", "hit"), *route),
        ),
    )
    assert (shapes[True].count(miss), shapes[True].count(hit)) == (1, 1)
    assert "cache.lookup" not in {name for name, _, _ in shapes[True]}  # an L1 read: no span of its own


# --- faults inside the pipeline ------------------------------------------------------------------


def _active(app: Flask) -> float:
    return _series(app)[("http_active_requests", ())]


def _answered(app: Flask, status: str) -> float:
    return sum(
        v
        for (name, labels), v in _series(app).items()
        if name == "http_requests_total" and ("status", status) in labels
    )


def _fault_app(fault: str, hit: bool, spans: InMemorySpanExporter) -> tuple[Flask, list[str]]:
    """An app whose `fault` step raises once, primed with the answer when `hit`."""
    app = _traced_app(True, spans) if fault == "span" else _app(True)[0]
    if hit:
        app.test_client().post("/api/optimize", json=VALID["/api/optimize"])
    raised: list[str] = []
    found = parts_of(app)
    if fault == "access":
        real_write = found.access.write

        def write(fields: dict[str, Any]) -> None:
            if not raised:
                raised.append(fault)
                raise OSError("stdout closed")
            real_write(fields)

        found.access.write = write  # type: ignore[method-assign]
    elif fault == "metrics":
        recorder = found.instruments.recorder  # type: ignore[union-attr]
        real_answered = recorder.answered

        def answered(*args: Any) -> None:
            if not raised:
                raised.append(fault)
                raise ValueError("metrics file full")
            real_answered(*args)

        recorder.answered = answered  # type: ignore[method-assign]
    else:

        class Failing(SimpleSpanProcessor):
            def on_end(self, span: ReadableSpan) -> None:
                if not raised and span.name.startswith("POST "):
                    raised.append(fault)
                    raise RuntimeError("span processor failed")

        found.tracing.provider.add_span_processor(Failing(InMemorySpanExporter()))  # type: ignore[union-attr]
    return app, raised


@pytest.mark.parametrize("hit", [False, True], ids=["miss", "hit"])
@pytest.mark.parametrize("fault", ["access", "span", "metrics"])
def test_a_fault_in_a_step_answers_json_500_counted_once(fault: str, hit: bool, spans: InMemorySpanExporter) -> None:
    app, raised = _fault_app(fault, hit, spans)
    client = app.test_client()
    before_500 = _answered(app, "500")
    failed = client.post("/api/optimize", json=VALID["/api/optimize"], headers={"X-Request-ID": "fault-1"})
    assert raised == [fault]
    assert failed.status_code == 500
    assert failed.get_json() == {
        "error": "Internal server error",
        "details": "unexpected error; quote the requestId when reporting it",
        "requestId": "fault-1",
    }
    assert failed.headers["X-Request-ID"] == "fault-1" and failed.headers["X-Content-Type-Options"] == "nosniff"
    assert _active(app) == 0
    # Each sink is tried once a request: after a failed metrics write the 500 is not counted
    # again (its access line, written before, says 200); otherwise the 500 is counted once.
    assert _answered(app, "500") - before_500 == (0 if fault == "metrics" else 1)
    after = client.post("/api/optimize", json=VALID["/api/optimize"])
    assert after.status_code == 200 and after.headers["X-Cache"] == "HIT" if hit else after.status_code == 200
    assert _active(app) == 0


def test_a_stream_is_counted_active_until_it_ends_and_logged_then() -> None:
    app, log = _app(True)
    response = app.test_client().post("/api/optimize-stream", json=VALID["/api/optimize"], buffered=False)
    assert _active(app) == 1  # its events are not all read yet
    assert _lines(log) == []
    data = b"".join(response.response)
    response.close()
    assert b"event: done" in data
    assert _active(app) == 0
    (line,) = _lines(log)
    assert line["endpoint"] == "optimize.optimize_stream" and line["bytes"] == len(data) and line["ttft_ms"] is not None
