"""Per request: the facts of the request (tokens, cache and upstream time), one JSON access-log
line on stdout and a Server-Timing header (written by the request pipeline, app.pipeline). The
facts are recorded by RequestFacts whatever the metrics setting: they belong to the request."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

from app.exchange import current
from app.gateway.observer import Observer

__all__ = ["AccessLog", "RequestFacts", "server_timing"]

log = logging.getLogger("app.access")

_encode = json.JSONEncoder(ensure_ascii=False, default=str).encode


class RequestFacts(Observer):
    """Keeps what the gateway did for the current request on its Exchange, for the access line
    and Server-Timing (nothing outside a request, e.g. in a stream's producer greenlet)."""

    def cache_lookup(self, namespace: str, status: str, seconds: float = 0.0, tier: str = "l1") -> None:
        exchange = current()
        if exchange is not None:
            exchange.cache_seconds = seconds

    def upstream_call(self, provider: str, model: str, request: Any, outcome: Any, seconds: float) -> None:
        exchange = current()
        if exchange is not None and hasattr(outcome, "input_tokens"):  # a ProviderResult: tokens spent
            spent = exchange.tokens
            exchange.tokens = (spent[0] + outcome.input_tokens, spent[1] + outcome.output_tokens)

    def upstream_wait(self, seconds: float) -> None:
        exchange = current()
        if exchange is not None:
            exchange.upstream_seconds += seconds


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
