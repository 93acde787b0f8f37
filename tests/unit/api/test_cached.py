"""The cached-answer path (app.api._cached): a fresh hit answered in front of Flask exactly as
Flask answers it; everything else handed to Flask untouched."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import Client, EnvironBuilder, run_wsgi_app

from app import create_app
from app.api._cached import CachedAnswers
from app.observability.tracing import TRACED, CachedSpans, _edge_sampler
from app.schemas import OptimizeRequest
from config.settings import load_settings

BODY = {"prompt": "Explain the CAP theorem", "mode": "reasoning"}
# Values that differ between any two requests, whichever path answers them.
PER_REQUEST = {"X-Request-ID", "Server-Timing", "RateLimit-Remaining", "RateLimit-Reset", "Age"}


def _app(**settings: str) -> tuple[Flask, list[str], io.StringIO]:
    """An app, the list of requests handed on to Flask, and the app's access log."""
    app = create_app({"APP_ENV": "testing", "LOG_LEVEL": "INFO", **settings})
    seen: list[str] = []
    layer = _cached(app)
    flask_app = layer.app

    def handed_on(environ: dict[str, Any], start_response: Any) -> Any:
        seen.append("flask")
        return flask_app(environ, start_response)

    layer.app = handed_on
    log = app.extensions["access_log"].stream = io.StringIO()
    return app, seen, log


def _cached(app: Flask) -> CachedAnswers:
    layer = app.wsgi_app
    assert isinstance(layer, CachedAnswers)
    return layer


def _post(wsgi: Any, body: Any = BODY, **kwargs: Any) -> Any:
    return Client(wsgi).post("/api/optimize", json=body, **kwargs)


def _lines(log: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.getvalue().splitlines()]


def _series(app: Flask) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = app.test_client().get("/metrics").get_data(as_text=True)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_fresh_hit_is_answered_without_flask_exactly_as_flask_answers_it() -> None:
    app, seen, log = _app(RATE_LIMIT="100/minute", CORS_ORIGINS="https://ui.example")
    layer = _cached(app)
    assert _post(layer).headers["X-Cache"] == "MISS"  # Flask made the answer
    assert seen == ["flask"]
    headers = {"Origin": "https://ui.example", "X-Request-ID": "caller-id-1"}

    through_flask = _post(layer.app, headers=headers)  # the layer's own app: Flask alone
    assert seen == ["flask", "flask"]
    before = _series(app)
    served_here = _post(layer, headers=headers)
    assert seen == ["flask", "flask", "flask"]  # only the /metrics read above: the hit never reached Flask

    assert served_here.status_code == through_flask.status_code == 200
    assert served_here.get_data() == through_flask.get_data()
    assert sorted(served_here.headers.keys()) == sorted(through_flask.headers.keys())
    for name in set(through_flask.headers.keys()) - PER_REQUEST:
        assert served_here.headers.get_all(name) == through_flask.headers.get_all(name), name
    assert served_here.headers["X-Request-ID"] == "caller-id-1"
    assert served_here.headers["Server-Timing"].startswith("total;dur=")
    assert ", cache;dur=" in served_here.headers["Server-Timing"]
    # One window: the layer counted this request after Flask's two.
    assert int(served_here.headers["RateLimit-Remaining"]) == int(through_flask.headers["RateLimit-Remaining"]) - 1

    flask_line, our_line = _lines(log)[1], _lines(log)[-1]
    assert our_line.keys() == flask_line.keys()
    for field in ("method", "endpoint", "status", "request_id", "trace_id", "cache", "upstream_ms", "provider"):
        assert our_line[field] == flask_line[field], field
    assert (our_line["input_tokens"], our_line["output_tokens"]) == (0, 0)

    after = _series(app)
    requests = ("http_requests_total", (("endpoint", "optimize.optimize"), ("method", "POST"), ("status", "200")))
    hits = ("cache_hits_total", (("cache_type", "optimize"),))
    assert after[requests] - before[requests] == 1
    assert after[hits] - before[hits] == 1
    duration = ("http_request_duration_seconds_count", requests[1])
    assert after[duration] - before[duration] == 1
    assert after[("http_active_requests", ())] == 1  # the /metrics read itself; the hit is over


@pytest.mark.parametrize(
    ("why", "kwargs", "status"),
    [
        ("the caller sent Cache-Control", {"headers": {"Cache-Control": "max-age=60"}}, 200),
        ("it is not JSON", {"data": json.dumps(BODY), "content_type": "text/plain"}, 415),
        ("it does not validate", {"body": {**BODY, "mode": "nonsense"}}, 400),
        ("it is malformed", {"data": b'{"prompt": ', "content_type": "application/json"}, 400),
    ],
)
def test_what_the_layer_does_not_serve_flask_answers_with_the_body_it_was_sent(
    why: str, kwargs: dict[str, Any], status: int
) -> None:
    app, seen, _ = _app()
    _post(app.wsgi_app)  # the answer is cached
    seen.clear()
    body = kwargs.pop("body", BODY)
    if "data" in kwargs:
        response = Client(app.wsgi_app).post(
            "/api/optimize", content_type=kwargs.pop("content_type", "application/json"), **kwargs
        )
    else:
        response = _post(app.wsgi_app, body, **kwargs)
    assert response.status_code == status, why
    assert seen == ["flask"], why
    if status == 200:
        assert response.headers["X-Cache"] == "HIT"
        assert json.loads(response.get_data())["optimizedPrompt"]
    else:
        assert response.is_json and response.json["error"]  # type: ignore[index]


def test_a_sampled_hit_is_answered_here_with_the_spans_flasks_path_makes() -> None:
    """The server span (the caller's trace and parent, the instrumentation's attributes), its
    cache.lookup child, and the trace id in the access line; made although the configured ratio
    is 0, since the edge sampled the request; an unsampled hit makes none."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    app, seen, log = _app()
    ratio_zero = load_settings({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"})
    provider = TracerProvider(sampler=_edge_sampler(ratio_zero))
    exported = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    app.extensions["cached_spans"] = CachedSpans(provider, provider.get_tracer("prompt-builder-api"))
    _post(app.wsgi_app)  # the answer is cached (by Flask: this app has no instrumentation)
    seen.clear()

    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    headers = {"X-Request-ID": "sampled-hit", "traceparent": f"00-{trace_id}-{parent}-01", "User-Agent": "ua/1"}
    response = _post(app.wsgi_app, headers=headers, environ_overrides={TRACED: True})
    assert response.headers["X-Cache"] == "HIT" and seen == []
    lookup, server = exported.get_finished_spans()
    assert (server.name, server.kind, server.instrumentation_scope.name) == (
        "POST /api/optimize",
        SpanKind.SERVER,
        "opentelemetry.instrumentation.flask",
    )
    assert f"{server.context.trace_id:032x}" == trace_id and f"{server.parent.span_id:016x}" == parent
    attributes = dict(server.attributes)
    assert attributes["http.route"] == "/api/optimize" and attributes["http.status_code"] == 200
    assert attributes["http.method"] == "POST" and attributes["http.user_agent"] == "ua/1"
    assert attributes["http.request.header.x_request_id"] == "sampled-hit"
    assert lookup.name == "cache.lookup" and lookup.parent.span_id == server.context.span_id
    assert dict(lookup.attributes) == {"cache.namespace": "optimize", "cache.status": "hit"}
    assert server.start_time <= lookup.start_time <= lookup.end_time <= server.end_time
    assert _lines(log)[-1]["trace_id"] == trace_id

    _post(app.wsgi_app)  # not sampled
    assert len(exported.get_finished_spans()) == 2 and _lines(log)[-1]["trace_id"] is None
    _post(app.wsgi_app, environ_overrides={TRACED: True})  # sampled at the edge, no parent
    root = exported.get_finished_spans()[-1]
    assert root.name == "POST /api/optimize" and root.parent is None and seen == []


def test_a_body_over_the_limit_is_refused_by_flask_unread() -> None:
    app, seen, _ = _app(MAX_BODY_BYTES="1024")
    response = _post(app.wsgi_app, {**BODY, "prompt": "x" * 2000})
    assert response.status_code == 413 and seen == ["flask"]


def test_a_miss_and_other_routes_go_to_flask() -> None:
    app, seen, _ = _app()
    assert _post(app.wsgi_app).headers["X-Cache"] == "MISS"
    assert Client(app.wsgi_app).get("/api/optimize").status_code == 405
    assert Client(app.wsgi_app).post("/api/optimize-stream", json=BODY).headers["X-Cache"] == "HIT"
    assert Client(app.wsgi_app).post("/api/generate-questions", json={"prompt": "p"}).status_code == 200
    assert seen == ["flask"] * 4


def test_a_chunked_body_goes_to_flask_unread() -> None:
    app, seen, _ = _app()
    _post(app.wsgi_app)
    seen.clear()
    environ = EnvironBuilder("/api/optimize", method="POST", json=BODY).get_environ()
    del environ["CONTENT_LENGTH"]  # as gunicorn passes a chunked body: no length, its end marked
    environ["wsgi.input_terminated"] = True
    app_iter, status, headers = run_wsgi_app(app.wsgi_app, environ)
    assert status == "200 OK" and headers["X-Cache"] == "HIT"
    assert json.loads(b"".join(app_iter))["optimizedPrompt"]
    assert seen == ["flask"]


def test_with_api_keys_every_request_is_authenticated_by_flask() -> None:
    app, seen, _ = _app(API_KEYS="k1")
    key = {"X-API-Key": "k1"}
    assert _post(app.wsgi_app, headers=key).headers["X-Cache"] == "MISS"
    hit = _post(app.wsgi_app, headers=key)
    assert hit.headers["X-Cache"] == "HIT" and hit.headers["Cache-Control"] == "no-store"
    assert _post(app.wsgi_app).status_code == 401
    assert seen == ["flask"] * 3


def test_one_rate_limit_window_for_both_paths_and_no_cache_hit_counted_for_a_refusal() -> None:
    app, seen, _ = _app(RATE_LIMIT="3/minute")
    statuses = [_post(app.wsgi_app).status_code for _ in range(3)]
    assert statuses == [200, 200, 200] and seen == ["flask"]  # one miss through Flask, two hits here
    hits = ("cache_hits_total", (("cache_type", "optimize"),))
    before = _series(app)[hits]
    refused = _post(app.wsgi_app)
    assert refused.status_code == 429 and seen[-1] == "flask"  # Flask-Limiter answers the refusal
    assert refused.headers["Retry-After"] and refused.headers["RateLimit-Remaining"] == "0"
    assert _series(app)[hits] == before


def test_while_the_limiter_counts_in_memory_flask_serves_every_request() -> None:
    app, seen, _ = _app(RATE_LIMIT="100/minute")
    _post(app.wsgi_app)
    (limiter,) = app.extensions["limiter"]
    limiter._storage_dead = True  # as after a Redis failure with the fallback on
    seen.clear()
    assert _post(app.wsgi_app).headers["X-Cache"] == "HIT"
    assert seen == ["flask"]  # Flask-Limiter's path is the one that checks whether storage is back


def test_a_miss_handed_to_flask_is_validated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    app, seen, _ = _app()
    validate = OptimizeRequest.model_validate
    calls: list[object] = []

    def counted(data: object) -> OptimizeRequest:
        calls.append(data)
        return validate(data)

    monkeypatch.setattr(OptimizeRequest, "model_validate", counted)
    assert _post(app.wsgi_app).headers["X-Cache"] == "MISS"
    assert seen == ["flask"] and len(calls) == 1
    assert _post(app.wsgi_app, {**BODY, "mode": "nonsense"}).status_code == 400  # Flask validates again:
    assert len(calls) == 3  # its error, its words


def test_with_metrics_off_and_the_access_log_off_a_hit_is_still_answered_here() -> None:
    app, seen, log = _app(METRICS_ENABLED="false", LOG_LEVEL="WARNING")
    assert _post(app.wsgi_app).headers["X-Cache"] == "MISS"
    hit = _post(app.wsgi_app)
    assert hit.status_code == 200 and hit.headers["X-Cache"] == "HIT" and hit.headers["X-Request-ID"]
    assert seen == ["flask"] and log.getvalue() == ""
