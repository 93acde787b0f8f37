"""OpenTelemetry traces, configured from the standard OTEL_* variables (parsed, like every
other variable, in config/settings.py and passed to the SDK explicitly), set up per worker.

On when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set (OTLP over HTTP: gRPC misbehaves under gevent),
or in development (console exporter); off when OTEL_SDK_DISABLED=true or nothing would receive the
spans. Off means no instrumentation at all: it costs ~40 % of cached-request throughput here.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from flask import Flask, g

from config.settings import Settings

__all__ = ["OTelTracer", "init_app", "sampler"]

_instrumented_requests = False


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


class OTelTracer:
    """The gateway's tracer interface over an OpenTelemetry tracer."""

    def __init__(self, tracer: Any) -> None:
        self._tracer = tracer

    def span(self, name: str, attributes: dict[str, Any] | None = None) -> AbstractContextManager[Any]:
        return self._tracer.start_as_current_span(name, attributes=attributes)  # type: ignore[no-any-return]


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
    provider = TracerProvider(resource=resource, sampler=sampler(settings))
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
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider, excluded_urls="health,metrics")
    if not _instrumented_requests:  # patches requests.Session for the whole process, once
        RequestsInstrumentor().instrument(tracer_provider=provider)
        _instrumented_requests = True
    app.extensions["tracer_provider"] = provider

    @app.before_request
    def _request_id_attribute() -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("http.request.header.x_request_id", g.get("request_id", ""))

    return OTelTracer(provider.get_tracer("prompt-builder-api"))
