"""What the pipeline records of each answer: the request counted in and out of
http_active_requests, its access line and its request metrics — a stream's when it ends (with
its time to first event and its bytes), each sink tried once a request."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from app.exchange import Exchange
from app.iterators import observed
from app.observability.access import AccessLog

__all__ = ["Recording"]

log = logging.getLogger(__name__)

_STREAM_TYPE = "text/event-stream"


def _is_stream(headers: list[tuple[str, str]]) -> bool:
    return any(k.lower() == "content-type" and v.startswith(_STREAM_TYPE) for k, v in headers)


class Recording:
    """The access log and the request metrics (None with METRICS_ENABLED=false) of the pipeline."""

    def __init__(self, access: AccessLog, recorder: Any) -> None:
        self._access, self._recorder = access, recorder

    def started(self, exchange: Exchange) -> bool:
        """Count the request in; whether it was (a failing gauge never fails the request)."""
        if self._recorder is None:
            return False
        try:
            self._recorder.started()
        except Exception:
            log.exception("counting a request failed", extra={"request_id": exchange.request_id})
            return False
        return True

    def ended(self, exchange: Exchange) -> None:
        if self._recorder is None:
            return
        try:
            self._recorder.ended()
        except Exception:  # the answer is made: a failing gauge must not turn it into an HTML 500
            log.exception("counting a request's end failed", extra={"request_id": exchange.request_id})

    def record(
        self, exchange: Exchange, status: str, headers: list[tuple[str, str]], attempted: set[str]
    ) -> dict[str, Any] | None:
        """Write the answer's access line, then count it, skipping a sink already `attempted`
        for this request (a stream's line is returned instead, unwritten: it is written when
        the stream ends)."""
        environ = exchange.environ
        code = int(status[:3])
        total = time.perf_counter() - exchange.started
        method = environ["REQUEST_METHOD"]
        stream = _is_stream(headers)
        fields = None
        access = self._access
        if "access" not in attempted and access.enabled():
            attempted.add("access")
            fields = access.fields(
                method,
                exchange.endpoint,
                code,
                total,
                exchange.request_id,
                exchange.trace_id,
                exchange.cache_status,
                exchange.upstream_seconds,
                exchange.tokens,
                exchange.key,
            )
            if exchange.asked is not None:  # an answer of the cache: what a trace needs (loadtest.traces)
                fields["request"] = exchange.asked.rpartition(":")[2][:24]
                fields["mode"] = exchange.mode
                fields["size"] = _request_bytes(environ)
                fields["bytes"] = _content_length(headers)
            if not stream:
                access.write(fields)
        if "metrics" not in attempted and self._recorder is not None and environ.get("PATH_INFO") != "/metrics":
            attempted.add("metrics")
            self._recorder.answered(
                method, exchange.endpoint, code, total, exchange.upstream_seconds, exchange.rate_limited
            )
        return fields if stream else None

    def streamed(
        self, exchange: Exchange, status: str, headers: list[tuple[str, str]], events: Iterable[bytes]
    ) -> Iterable[bytes]:
        """A stream's events, passed on; counted when its headers go, logged (time to first
        event, bytes, total) and ended when it ends or the caller leaves."""
        try:
            fields = self.record(exchange, status, headers, set())
        except Exception:  # nothing sent yet, but the stream's producer may run: end it
            log.exception("recording a stream failed", extra={"request_id": exchange.request_id})
            fields = None
        started = exchange.started
        sent = [0]
        first: list[float] = []
        access = self._access

        def on_event(chunk: bytes) -> None:
            if not first:
                first.append(time.perf_counter())
            sent[0] += len(chunk)

        def on_close() -> None:
            try:
                if fields is not None:
                    fields["duration_ms"] = round((time.perf_counter() - started) * 1000, 2)
                    fields["ttft_ms"] = round((first[0] - started) * 1000, 2) if first else None
                    fields["bytes"] = sent[0]
                    access.write(fields)
            finally:
                self.ended(exchange)

        return observed(events, on_event, on_close)


def _request_bytes(environ: dict[str, Any]) -> int:
    """The request's size: its body, or a GET's query (its request in the URL)."""
    length = environ.get("CONTENT_LENGTH") or ""
    return int(length) if length.isdigit() else len(environ.get("QUERY_STRING", ""))


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    for name, value in headers:
        if name.lower() == "content-length" and value.isdigit():
            return int(value)
    return None
