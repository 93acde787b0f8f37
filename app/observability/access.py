"""Per request: one JSON access-log line on stdout and a Server-Timing header, from the facts
of the request (tokens, cache and upstream time) its handler returned to the pipeline
(app.pipeline, Exchange.told)."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

__all__ = ["AccessLog", "server_timing"]

log = logging.getLogger("app.access")

_encode = json.JSONEncoder(ensure_ascii=False, default=str).encode


def server_timing(total: float, cache: float | None, upstream: float) -> str:
    """The Server-Timing header: the whole request, the cache lookup and the upstream wait, in ms."""
    timing = f"total;dur={total * 1000:.2f}"
    if cache is not None:
        timing += f", cache;dur={cache * 1000:.2f}"
    if upstream:
        timing += f", upstream;dur={upstream * 1000:.2f}"
    return timing


class AccessLog:
    """Writes one access line per request: the JSON object app.observability.logs writes for a
    record ("time", "level", "logger", "message", then the fields), built by one encoder call and
    written with one write: going through `logging` (a LogRecord, `extra=`, the formatter's scan
    of the record's attributes) cost a good part of a cached answer's time (docs/performance.md)."""

    def __init__(self, provider: str, model: str, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout
        self._provider, self._model = provider, model
        self._second = -1
        self._stamp = ""

    def fields(
        self,
        method: str,
        endpoint: str,
        status: int,
        total: float,
        request_id: str | None,
        trace_id: str | None,
        cache: str | None,
        upstream: float,
        tokens: tuple[int, int],
        key: str | None = None,
    ) -> dict[str, Any]:
        """The fields of one request's line (never the prompt, never a key's secret: its name)."""
        return {
            "method": method,
            "endpoint": endpoint,
            "status": status,
            "duration_ms": round(total * 1000, 2),
            "request_id": request_id,
            "trace_id": trace_id,
            "cache": cache,
            "upstream_ms": round(upstream * 1000, 2),
            "provider": self._provider,
            "model": self._model,
            "input_tokens": tokens[0],
            "output_tokens": tokens[1],
            "key": key,
        }

    def enabled(self) -> bool:
        """Is the access logger at INFO or below (LOG_LEVEL)?"""
        return log.isEnabledFor(logging.INFO)

    def write(self, fields: dict[str, Any]) -> None:
        """Write `fields` as one line, after the same envelope every other log line has."""
        now = time.time()
        second = int(now)
        if second != self._second:  # the date part changes once a second: formatted once
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        entry = {
            "time": f"{self._stamp}.{int((now - second) * 1000):03d}Z",
            "level": "info",
            "logger": "app.access",
            "message": "request",
            **fields,
        }
        self.stream.write(_encode(entry) + "\n")
        self.stream.flush()
