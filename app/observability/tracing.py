"""OpenTelemetry traces, configured from the standard OTEL_* variables (parsed, like every
other variable, in config/settings.py and passed to the SDK explicitly), set up per worker.

On when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set (OTLP over HTTP: gRPC misbehaves under gevent),
or in development (console exporter); off when OTEL_SDK_DISABLED=true or nothing would receive the
spans. Off means no instrumentation at all.

Sampling is decided once, at the pipeline's edge (`Tracing.decide`), before any handler runs: a
sampled request runs inside its server span (`Tracing.serve`), whichever handler answers it — a
JSON endpoint's or Flask; any other gets no span of its own,
none in the gateway (nor in a stream's producer greenlet, which carries the request's decision
and trace: `OTelTracer.carry`), and for an outgoing HTTP call only a dropped, non-recording one
(so the model API is still told "not sampled" in its traceparent). The instrumentation's
per-request work otherwise ran for every request, sampled or not (docs/performance.md).

The server span is made here, with the attributes the WSGI instrumentation gives one (its 1.12
names), not by that instrumentation: its per-request work (attribute collection through
semantic-convention helpers, a start_response wrapper, a body wrapper, duration instruments this
service does not read) cost as much as the span itself, and a sampled request cost three
unsampled ones (docs/performance.md, "Tracing").
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from typing import Any, TypeVar

from app.exchange import Exchange, current
from app.iterators import observed
from config.settings import Settings

__all__ = ["OTelTracer", "Tracing", "init_app", "sampler"]

F = TypeVar("F", bound=Callable[..., Any])
Result = tuple[str, list[tuple[str, str]], Any]  # status, headers, body (bytes or a stream)
_instrumented_requests = False
# The edge's decision in a greenlet a request started (OTelTracer.carry). None: no request's.
_edge_decision: ContextVar[bool | None] = ContextVar("prompt_builder_edge_decision", default=None)
_UNTRACED_PATHS = ("/health", "/metrics")


def _decision() -> bool | None:
    """The edge's decision for the request being served here (in it, or in a greenlet it
    started); None outside requests."""
    exchange = current()
    return exchange.traced if exchange is not None else _edge_decision.get()


def _traced() -> bool:
    """Whether spans may be made here: for a request, only when the edge sampled it; elsewhere,
    the configured sampler decides."""
    return _decision() is not False


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
    one made in a greenlet the request started; a root span of no request follows
    OTEL_TRACES_SAMPLER; a child follows its parent when the configured sampler is parent-based."""
    from opentelemetry.sdk.trace import sampling

    configured = sampler(settings)
    root = configured._root if isinstance(configured, sampling.ParentBased) else configured

    class EdgeDecided(sampling.Sampler):
        def should_sample(self, *args: Any, **kwargs: Any) -> Any:
            edge = _decision()  # in a request, or carried: an unsampled request's spans are dropped
            decided = root if edge is None else sampling.ALWAYS_ON if edge else sampling.ALWAYS_OFF
            return decided.should_sample(*args, **kwargs)

        def get_description(self) -> str:
            return f"EdgeDecided{{{root.get_description()}}}"

    return sampling.ParentBased(EdgeDecided()) if configured is not root else EdgeDecided()


def _decider(settings: Settings) -> Callable[[dict[str, Any]], bool]:
    """Whether to trace a request, from its WSGI environ: a sampled or unsampled `traceparent`
    decides when the sampler is parent-based (read by the SDK's W3C propagator; a malformed one
    starts a new trace); otherwise the ratio (always_on 1, always_off 0)."""
    from opentelemetry import trace
    from opentelemetry.instrumentation.wsgi import wsgi_getter
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    name, ratio = settings.otel_traces_sampler, settings.otel_traces_sampler_arg
    base = name.removeprefix("parentbased_")
    ratio = {"always_on": 1.0, "always_off": 0.0}.get(base, ratio)
    parent_based = name.startswith("parentbased_")
    draw = random.random
    extract = TraceContextTextMapPropagator().extract

    def decide(environ: dict[str, Any]) -> bool:
        if environ.get("PATH_INFO", "").startswith(_UNTRACED_PATHS):
            return False
        if parent_based and "HTTP_TRACEPARENT" in environ:
            parent = trace.get_current_span(extract(environ, getter=wsgi_getter)).get_span_context()
            if parent.is_valid:
                return bool(parent.trace_flags.sampled)
        return ratio >= 1.0 or (ratio > 0.0 and draw() < ratio)

    return decide


class OTelTracer:
    """The gateway's tracer interface over an OpenTelemetry tracer."""

    def __init__(self, tracer: Any) -> None:
        from opentelemetry import trace

        self._tracer = tracer
        self._invalid, self._current = trace.INVALID_SPAN, trace.get_current_span

    def span(self, name: str, attributes: dict[str, Any] | None = None) -> AbstractContextManager[Any]:
        if not _traced():
            return nullcontext(self._invalid)  # an unsampled request: no span work at all
        return self._tracer.start_as_current_span(name, attributes=attributes)  # type: ignore[no-any-return]

    def current(self) -> Any:
        return self._current() if _traced() else self._invalid

    def carry(self, fn: F) -> F:
        """`fn` under this request's trace (its spans children of the current span) and sampling
        decision: a stream's producer then makes no span for a request the edge did not sample
        (it sampled at the configured ratio on its own before), and its spans join the trace of
        the request that started it (each was the root of a trace of its own before)."""
        from opentelemetry import context

        decision = _decision()
        carried_context = context.get_current()

        def carried(*args: Any, **kwargs: Any) -> Any:
            token = context.attach(carried_context)
            decided = _edge_decision.set(decision)
            try:
                return fn(*args, **kwargs)
            finally:
                _edge_decision.reset(decided)
                context.detach(token)

        return carried  # type: ignore[return-value]


class Tracing:
    """The pipeline's tracing: the edge's decision, and the server span around a sampled
    request (named by its route)."""

    def __init__(self, settings: Settings, provider: Any) -> None:
        from opentelemetry import context, trace
        from opentelemetry.instrumentation.wsgi import wsgi_getter
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.decide = _decider(settings)
        self.provider = provider
        tracer = provider.get_tracer("prompt-builder-api")
        self.tracer = OTelTracer(tracer)
        self._server = tracer
        self._kind, self._error = trace.SpanKind.SERVER, trace.Status(trace.StatusCode.ERROR)
        self._extract, self._getter = TraceContextTextMapPropagator().extract, wsgi_getter
        self._attach, self._detach, self._in_context = context.attach, context.detach, trace.set_span_in_context

    def shutdown(self) -> None:
        """Export what is queued and stop; the requests instrumentation goes with it (it reports
        to this provider), so a later app in this process instruments afresh."""
        global _instrumented_requests
        from opentelemetry.instrumentation.requests import RequestsInstrumentor

        self.provider.shutdown()
        if _instrumented_requests:
            RequestsInstrumentor().uninstrument()
            _instrumented_requests = False

    def serve(self, exchange: Exchange, core: Callable[[Exchange], Result]) -> Result:
        """`core(exchange)` inside the request's server span, current while it runs (so the
        gateway's spans are its children); ended with the answer, or with a stream's last event."""
        environ = exchange.environ
        method = environ["REQUEST_METHOD"]
        parent = self._extract(environ, getter=self._getter) if "HTTP_TRACEPARENT" in environ else None
        span = self._server.start_span(
            f"{method} {exchange.route}" if exchange.route else method,
            context=parent,
            kind=self._kind,
            attributes=_server_attributes(environ, exchange),
        )
        exchange.trace_id = f"{span.get_span_context().trace_id:032x}"
        token = self._attach(self._in_context(span))
        try:
            status, headers, body = core(exchange)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(self._error)
            span.end()
            raise
        finally:
            self._detach(token)
        code = int(status[:3])
        span.set_attribute("http.status_code", code)
        if code >= 500:
            span.set_status(self._error)
        if isinstance(body, bytes):
            span.end()
            return status, headers, body
        return status, headers, observed(body, on_close=span.end)


def _server_attributes(environ: dict[str, Any], exchange: Exchange) -> dict[str, Any]:
    """A server span's attributes, as the WSGI instrumentation names them (semantic conventions
    1.12), and the request id."""
    attributes: dict[str, Any] = {
        "http.method": environ["REQUEST_METHOD"],
        "http.server_name": environ.get("SERVER_NAME", ""),
        "http.scheme": environ.get("wsgi.url_scheme", "http"),
        "http.flavor": environ.get("SERVER_PROTOCOL", "").removeprefix("HTTP/"),
        "http.target": environ.get("RAW_URI") or environ.get("PATH_INFO", ""),
        "http.request.header.x_request_id": exchange.request_id,
    }
    for name, key in _SERVER_OPTIONAL:
        value = environ.get(key)
        if value:
            attributes[name] = value
    if environ.get("SERVER_PORT", "").isdigit():
        attributes["net.host.port"] = int(environ["SERVER_PORT"])
    if environ.get("REMOTE_PORT", "").isdigit():
        attributes["net.peer.port"] = int(environ["REMOTE_PORT"])
    if exchange.route is not None:
        attributes["http.route"] = exchange.route
    return attributes


_SERVER_OPTIONAL = (
    ("http.host", "HTTP_HOST"),
    ("net.peer.ip", "REMOTE_ADDR"),
    ("http.user_agent", "HTTP_USER_AGENT"),
)


def init_app(settings: Settings) -> Tracing | None:
    """Install the tracer provider and the requests instrumentation; None when tracing is off."""
    global _instrumented_requests
    if not settings.tracing_enabled:
        return None
    from opentelemetry import trace
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create({"service.name": settings.otel_service_name, "deployment.environment": settings.app_env})
    # Not at interpreter exit: a gunicorn worker exports what it still holds in its worker_exit
    # hook (config/gunicorn.conf.py), through Tracing.shutdown — one way out for queued spans.
    provider = TracerProvider(resource=resource, sampler=_edge_sampler(settings), shutdown_on_exit=False)
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
    if not _instrumented_requests:  # patches requests.Session for the whole process, once
        RequestsInstrumentor().instrument(tracer_provider=provider)
        _instrumented_requests = True
    return Tracing(settings, provider)
