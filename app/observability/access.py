"""Per request: one JSON access-log line on stdout and a Server-Timing header."""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request

from config.settings import Settings

__all__ = ["init_app"]

log = logging.getLogger("app.access")


def _trace_id() -> str | None:
    from opentelemetry import trace  # cheap when tracing is off: the no-op span has an invalid context

    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


def init_app(app: Flask, settings: Settings) -> None:
    """Log every request (never prompts or keys) and tell the caller where the time went."""

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
            log.info(
                "request",
                extra={
                    "method": request.method,
                    "endpoint": request.endpoint or "none",
                    "status": response.status_code,
                    "duration_ms": round(total * 1000, 2),
                    "request_id": g.get("request_id"),
                    "trace_id": _trace_id(),
                    "cache": response.headers.get("X-Cache"),
                    "upstream_ms": round(upstream * 1000, 2),
                    "provider": settings.llm_provider,
                    "model": settings.llm_model,
                    "input_tokens": tokens[0] if tokens else 0,
                    "output_tokens": tokens[1] if tokens else 0,
                },
            )
        return response
