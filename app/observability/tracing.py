"""OpenTelemetry traces, configured from the standard OTEL_* variables (parsed, like every
other variable, in config/settings.py and passed to the SDK explicitly), set up per worker.

On when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set (OTLP over HTTP: gRPC misbehaves under gevent),
or in development (console exporter); off when OTEL_SDK_DISABLED=true or nothing would receive the
spans. Off means no instrumentation at all.

Sampling is decided once, at the edge (`_Edge`), before Flask sees the request: a sampled request
goes through the Flask instrumentation (or, a fresh cached answer, gets the same spans from
`CachedSpans` in front of Flask); any other goes straight to the app: no span of its own,
none in the gateway (nor in a stream's producer greenlet, which carries the request's decision
and trace: `OTelTracer.carry`), and for an outgoing HTTP call only a dropped, non-recording one
(so the model API is still told "not sampled" in its traceparent). The instrumentation's
per-request work — its WSGI wrapper and hooks, building attributes, a span that the sampler then
drops — otherwise ran for every request, sampled or not: at 10 % sampling it cost 32 % of
cached-request throughput (`make bench` prints the figure now).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from typing import Any, TypeVar

from flask import Flask, Response, g, has_request_context, request

from config.settings import Settings

__all__ = ["CachedSpans", "OTelTracer", "init_app", "sampler"]

F = TypeVar("F", bound=Callable[..., Any])
_instrumented_requests = False
TRACED = "prompt_builder.traced"  # WSGI environ key: the edge sampled this request
# The edge's decision where no Flask request tells it: while app.api._cached makes a sampled
# request's spans, and in a greenlet a request started (OTelTracer.carry). None: no request's.
_edge_decision: ContextVar[bool | None] = ContextVar("prompt_builder_edge_decision", default=None)
_UNTRACED_PATHS = ("/health", "/metrics")


def _traced() -> bool:
    """Whether spans may be made here: for a request (in it, or in a greenlet it started), only
    when the edge sampled it; elsewhere, the configured sampler decides."""
    if has_request_context():
        return bool(request.environ.get(TRACED))
    return _edge_decision.get() is not False


def sampler(settings: Settings) -> Any:
    """Build the sampler OTEL_TRACES_SAMPLER / _ARG name."""
    from opentelemetry.sdk.trace import sampling

    name, ratio = settings.otel_traces_sampler, settings.otel_traces_sampler_arg
    root = {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "traceidratio": sampling.TraceIdRatioBased(ratio),
    }[name.removeprefix("parentbased_")]
    return sampling.ParentBased(root) if name.startswith("parentbased_") else root


def _edge_sampler(settings: Settings) -> Any:
    """The SDK's sampler when the edge decides: a root span in a request is the request's own,
    already sampled there (so always kept: sampling it again would square the ratio), and so is
    one made for a request outside Flask (`CachedSpans`, a greenlet the request started); a
    root span of no request follows OTEL_TRACES_SAMPLER; a child follows its parent when the
    configured sampler is parent-based."""
    from opentelemetry.sdk.trace import sampling

    configured = sampler(settings)
    root = configured._root if isinstance(configured, sampling.ParentBased) else configured

    class EdgeDecided(sampling.Sampler):
        def should_sample(self, *args: Any, **kwargs: Any) -> Any:
            decided = root
            if has_request_context():  # the outgoing HTTP span of an unsampled request: dropped
                decided = sampling.ALWAYS_ON if request.environ.get(TRACED) else sampling.ALWAYS_OFF
            elif (edge := _edge_decision.get()) is not None:  # in front of Flask, or carried
                decided = sampling.ALWAYS_ON if edge else sampling.ALWAYS_OFF
            return decided.should_sample(*args, **kwargs)

        def get_description(self) -> str:
            return f"EdgeDecided{{{root.get_description()}}}"

    return sampling.ParentBased(EdgeDecided()) if configured is not root else EdgeDecided()


def _decider(settings: Settings) -> Callable[[dict[str, Any]], bool]:
    """Whether to trace a request, from its WSGI environ: a sampled or unsampled `traceparent`
    decides when the sampler is parent-based; otherwise the ratio (always_on 1, always_off 0)."""
    name, ratio = settings.otel_traces_sampler, settings.otel_traces_sampler_arg
    base = name.removeprefix("parentbased_")
    ratio = {"always_on": 1.0, "always_off": 0.0}.get(base, ratio)
    parent_based = name.startswith("parentbased_")
    draw = random.random

    def decide(environ: dict[str, Any]) -> bool:
        if environ.get("PATH_INFO", "").startswith(_UNTRACED_PATHS):
            return False
        if parent_based:
            parent = environ.get("HTTP_TRACEPARENT", "")
            # version-trace_id-parent_id-flags, 55 characters; bit 0 of the flags: sampled
            if len(parent) == 55 and parent[2] == parent[35] == parent[52] == "-":
                try:
                    return bool(int(parent[53:], 16) & 1)
                except ValueError:
                    pass  # a malformed header starts a new trace, as the SDK does
        return ratio >= 1.0 or (ratio > 0.0 and draw() < ratio)

    return decide


class _Edge:
    """The app's WSGI entry: decides whether to trace a request, once, and marks it in the environ
    for everything after it (the cached-answer layer, `_Instrumented`, the sampler)."""

    def __init__(self, app: Any, decide: Callable[[dict[str, Any]], bool]) -> None:
        self.app, self.decide = app, decide

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if self.decide(environ):
            environ[TRACED] = True
        return self.app(environ, start_response)  # type: ignore[no-any-return]


class _Instrumented:
    """Flask's own WSGI entry, at the end of the middleware chain: a request the edge marked goes
    through the instrumentation's WSGI wrapper, any other around it. The wrapper sits here, not in
    front of the chain, so a sampled hit answered in front of Flask (app.api._cached) does not
    pay for it: it built the request's attributes (~40 us here) for a span Flask never made."""

    def __init__(self, plain: Any, traced: Any) -> None:
        self.plain, self.traced = plain, traced

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get(TRACED):
            return self.traced(environ, start_response)  # type: ignore[no-any-return]
        return self.plain(environ, start_response)  # type: ignore[no-any-return]


def _replace_entry(app: Flask, entry: Any, replacement: Any) -> None:
    """Put `replacement` where the middleware chain in front of Flask calls `entry` (each
    middleware holds the next as `.app`, as werkzeug's and ours do)."""
    holder, name = app, "wsgi_app"
    while getattr(holder, name) != entry:
        holder, name = getattr(holder, name), "app"
    setattr(holder, name, replacement)


class OTelTracer:
    """The gateway's tracer interface over an OpenTelemetry tracer."""

    def __init__(self, tracer: Any) -> None:
        from opentelemetry import trace

        self._tracer = tracer
        self._invalid = trace.INVALID_SPAN

    def span(self, name: str, attributes: dict[str, Any] | None = None) -> AbstractContextManager[Any]:
        if not _traced():
            return nullcontext(self._invalid)  # an unsampled request: no span work at all
        return self._tracer.start_as_current_span(name, attributes=attributes)  # type: ignore[no-any-return]

    def carry(self, fn: F) -> F:
        """`fn` under this request's trace (its spans children of the current span) and sampling
        decision: a stream's producer then makes no span for a request the edge did not sample
        (it sampled at the configured ratio on its own before), and its spans join the trace of
        the request that started it (each was the root of a trace of its own before)."""
        from opentelemetry import context

        decision = _traced() if has_request_context() else _edge_decision.get()
        current = context.get_current()

        def carried(*args: Any, **kwargs: Any) -> Any:
            token = context.attach(current)
            decided = _edge_decision.set(decision)
            try:
                return fn(*args, **kwargs)
            finally:
                _edge_decision.reset(decided)
                context.detach(token)

        return carried  # type: ignore[return-value]


class CachedSpans:
    """The spans of a sampled request that app.api._cached answers in front of Flask: the ones
    Flask's instrumentation and the gateway make for the same hit through Flask — a server span
    built by the instrumentation's own attribute functions, and its `cache.lookup` child. Made
    once the answer is known (with the times it was taken at), so a request that goes on to
    Flask leaves no span of its own here. Through Flask a sampled hit cost 4-5 unsampled ones."""

    def __init__(self, provider: Any, tracer: Any) -> None:
        """`provider` as Flask's instrumentation got it; `tracer`, the gateway's."""
        from opentelemetry import propagate, trace
        from opentelemetry.instrumentation import flask as instrumentation
        from opentelemetry.instrumentation import wsgi
        from opentelemetry.instrumentation._semconv import _get_schema_url
        from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability as Stability
        from opentelemetry.instrumentation._semconv import _OpenTelemetryStabilitySignalType as Signal
        from opentelemetry.instrumentation.propagators import get_global_response_propagator

        Stability._initialize()
        self._mode = Stability._get_opentelemetry_stability_opt_in_mode(Signal.HTTP)
        # The instrumentation's own scope: a server span looks the same whoever made it
        self._server = trace.get_tracer(
            instrumentation.__name__, instrumentation.__version__, provider, schema_url=_get_schema_url(self._mode)
        )
        self._tracer = tracer
        self._trace, self._wsgi, self._propagate = trace, wsgi, propagate
        self._response_propagator = get_global_response_propagator

    def record(
        self,
        environ: dict[str, Any],
        route: str,
        status: str,
        headers: list[tuple[str, str]],
        request_id: str,
        started_ns: int,
        lookup: tuple[int, int, dict[str, Any]],
    ) -> str:
        """Record the request's spans and return their trace id (hex, as access lines give it):
        the request began at `started_ns` and ends now, `headers` being the answer's (a response
        propagator, if one is set, adds its own); `lookup` is the cache lookup's start, end (ns)
        and attributes."""
        wsgi, trace = self._wsgi, self._trace
        attributes = wsgi.collect_request_attributes(environ, self._mode)
        attributes["http.route"] = route
        token = _edge_decision.set(True)
        try:
            span = self._server.start_span(
                f"{environ['REQUEST_METHOD']} {route}",
                context=self._propagate.extract(environ, getter=wsgi.wsgi_getter),
                kind=trace.SpanKind.SERVER,
                attributes=attributes,
                start_time=started_ns,
            )
            in_span = trace.set_span_in_context(span)
            start, end, lookup_attributes = lookup
            child = self._tracer.start_span(
                "cache.lookup",
                context=in_span,
                attributes=lookup_attributes,
                start_time=start,
            )
            child.end(end_time=end)
        finally:
            _edge_decision.reset(token)
        span.set_attributes(wsgi.collect_custom_request_headers_attributes(environ))
        span.set_attribute("http.request.header.x_request_id", request_id)
        propagator = self._response_propagator()
        if propagator:
            propagator.inject(headers, context=in_span, setter=wsgi.default_response_propagation_setter)
        wsgi.add_response_attributes(span, status, headers, attributes, self._mode)
        span.set_attributes(wsgi.collect_custom_response_headers_attributes(headers))
        span.end()
        return f"{span.get_span_context().trace_id:032x}"


def init_app(app: Flask, settings: Settings) -> OTelTracer | None:
    """Install the tracer provider, Flask and requests instrumentation; None when tracing is off."""
    global _instrumented_requests
    if not settings.tracing_enabled:
        return None
    from opentelemetry import trace
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create({"service.name": settings.otel_service_name, "deployment.environment": settings.app_env})
    provider = TracerProvider(resource=resource, sampler=_edge_sampler(settings))
    delay = settings.otel_bsp_schedule_delay
    if settings.otel_traces_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # Short timeouts and a bounded queue: a dead collector drops spans, never slows requests.
        timeout = settings.otel_exporter_otlp_timeout / 1000
        exporter: Any = OTLPSpanExporter(endpoint=settings.otel_traces_endpoint, timeout=timeout)
        processor = BatchSpanProcessor(
            exporter, max_queue_size=4096, schedule_delay_millis=delay, export_timeout_millis=timeout * 1000
        )
    else:
        processor = BatchSpanProcessor(ConsoleSpanExporter(), schedule_delay_millis=delay)
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    chain = app.wsgi_app
    entry = type(app).wsgi_app.__get__(app)  # Flask's own entry, where `chain` ends
    app.wsgi_app = entry  # type: ignore[method-assign]  # the instrumentation wraps only that
    hooks = list(app.before_request_funcs.get(None, []))
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider, excluded_urls="health,metrics")
    traced = app.wsgi_app
    app.wsgi_app = chain  # type: ignore[method-assign]
    # Its hook starts the request's span: only for requests the edge sampled, and first, so that
    # a request another hook refuses (401 from auth, 429 from the limiter) has its span too
    # (after them, it never ran for those: no span, and a warning logged for each refusal).
    funcs = app.before_request_funcs[None]
    funcs[:] = [_only_traced(hook) for hook in funcs if hook not in hooks] + hooks
    _replace_entry(app, entry, _Instrumented(entry, traced))
    app.wsgi_app = _Edge(app.wsgi_app, _decider(settings))  # type: ignore[method-assign]
    if not _instrumented_requests:  # patches requests.Session for the whole process, once
        RequestsInstrumentor().instrument(tracer_provider=provider)
        _instrumented_requests = True
    app.extensions["tracer_provider"] = provider
    tracer = provider.get_tracer("prompt-builder-api")
    app.extensions["cached_spans"] = CachedSpans(provider, tracer)

    @app.after_request
    def _request_id_attribute(response: Response) -> Response:
        if request.environ.get(TRACED):  # the request id is known once its hook has run
            span = trace.get_current_span()
            if span.is_recording():
                span.set_attribute("http.request.header.x_request_id", g.get("request_id", ""))
        return response

    return OTelTracer(tracer)


def _only_traced(hook: Callable[[], Any]) -> Callable[[], Any]:
    def gated() -> Any:
        return hook() if request.environ.get(TRACED) else None

    return gated
