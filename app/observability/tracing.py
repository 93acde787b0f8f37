"""OpenTelemetry traces, configured from the standard OTEL_* variables, set up per worker.

On when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set (OTLP over HTTP: gRPC misbehaves under gevent),
or in development (console exporter); off when OTEL_SDK_DISABLED=true or nothing would receive the
spans. Off means no instrumentation at all: it costs ~40 % of cached-request throughput here.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from typing import Any

from flask import Flask, g

from config.settings import Settings

__all__ = ["OTelTracer", "init_app", "tracing_wanted"]

_instrumented_requests = False


def tracing_wanted(settings: Settings, environ: dict[str, str] | None = None) -> bool:
    """Return whether traces would go anywhere: an OTLP endpoint, or the console in development."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return bool(endpoint) or settings.app_env == "development"


class OTelTracer:
    """The gateway's tracer interface over an OpenTelemetry tracer."""

    def __init__(self, tracer: Any) -> None:
        self._tracer = tracer

    def span(self, name: str, attributes: dict[str, Any] | None = None) -> AbstractContextManager[Any]:
        return self._tracer.start_as_current_span(name, attributes=attributes)  # type: ignore[no-any-return]


def init_app(app: Flask, settings: Settings) -> OTelTracer | None:
    """Install the tracer provider, Flask and requests instrumentation; None when tracing is off."""
    global _instrumented_requests
    if not tracing_wanted(settings):
        return None
    from opentelemetry import trace
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    service = os.environ.get("OTEL_SERVICE_NAME") or "prompt-builder-api"
    resource = Resource.create({"service.name": service, "deployment.environment": settings.app_env})
    provider = TracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER / _ARG
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # Short timeouts and a bounded queue: a dead collector drops spans, never slows requests.
        exporter: Any = OTLPSpanExporter(timeout=float(os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT", "2")))
        provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=4096, export_timeout_millis=2000))
    else:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
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
