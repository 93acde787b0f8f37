"""Per request: the facts of the request (tokens, cache and upstream time), one JSON access-log
line on stdout and a Server-Timing header. The facts are recorded by RequestFacts whatever the
metrics setting: they belong to the request, not to the metrics backend."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

from flask import Flask, Response, g, has_request_context, request

from app.gateway.observer import Observer
from config.settings import Settings

__all__ = ["RequestFacts", "init_app"]

log = logging.getLogger("app.access")


def _trace_id() -> str | None:
    from opentelemetry import trace  # cheap when tracing is off: the no-op span has an invalid context

    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


class RequestFacts(Observer):
    """Keeps what the gateway did for the current request on `g`, for the log and Server-Timing."""

    def cache_lookup(self, namespace: str, status: str, seconds: float = 0.0) -> None:
        if has_request_context():
            g.cache_seconds = seconds

    def upstream_call(self, provider: str, model: str, request: Any, outcome: Any, seconds: float) -> None:
        if has_request_context() and hasattr(outcome, "input_tokens"):  # a ProviderResult: tokens spent
            spent = g.get("tokens", (0, 0))
            g.tokens = (spent[0] + outcome.input_tokens, spent[1] + outcome.output_tokens)

    def upstream_wait(self, seconds: float) -> None:
        if has_request_context():
            g.upstream_seconds = g.get("upstream_seconds", 0.0) + seconds


def _timed(events: Iterable[Any], started: float, fields: dict[str, Any]) -> Iterator[Any]:
    first: float | None = None
    sent = 0
    try:
        for chunk in events:
            if first is None:
                first = time.perf_counter()
            sent += len(chunk)
            yield chunk
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()
        end = time.perf_counter()
        fields["duration_ms"] = round((end - started) * 1000, 2)
        fields["ttft_ms"] = round((first - started) * 1000, 2) if first is not None else None
        fields["bytes"] = sent
        log.info("request", extra=fields)


def _no_trace() -> None:
    return None


def init_app(app: Flask, settings: Settings) -> None:
    """Log every request (never prompts or keys) and tell the caller where the time went."""
    trace_id = _trace_id if settings.tracing_enabled else _no_trace  # no OpenTelemetry lookup when off

    @app.after_request
    def _access(response: Response) -> Response:
        total = time.perf_counter() - g.get("started", time.perf_counter())
        upstream = g.get("upstream_seconds", 0.0)
        timing = [f"total;dur={total * 1000:.2f}"]
        if "cache_seconds" in g:
            timing.append(f"cache;dur={g.cache_seconds * 1000:.2f}")
        if upstream:
            timing.append(f"upstream;dur={upstream * 1000:.2f}")
        response.headers["Server-Timing"] = ", ".join(timing)
        if log.isEnabledFor(logging.INFO):
            tokens = g.get("tokens")
            fields = {
                "method": request.method,
                "endpoint": request.endpoint or "none",
                "status": response.status_code,
                "duration_ms": round(total * 1000, 2),
                "request_id": g.get("request_id"),
                "trace_id": trace_id(),
                "cache": response.headers.get("X-Cache"),
                "upstream_ms": round(upstream * 1000, 2),
                "provider": settings.llm_provider,
                "model": settings.llm_model,
                "input_tokens": tokens[0] if tokens else 0,
                "output_tokens": tokens[1] if tokens else 0,
            }
            if response.is_streamed and response.mimetype == "text/event-stream":
                # A stream's line is written when it ends, with its time to first event and total.
                response.response = _timed(response.response, g.started, fields)
            else:
                log.info("request", extra=fields)
        return response
