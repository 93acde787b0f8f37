"""Fresh cached answers to POST /api/optimize, served in front of Flask.

A cached answer needs none of Flask's request machinery: no request context, URL routing,
before/after hook chain or Response object. Through Flask a hit ran at 0.51x the bare Flask
endpoint's throughput; served here, 0.76-0.85x (`make bench`, 2026-12-02, docs/performance.md).
Everything a caller or an operator sees is
built by the same functions the Flask hooks use: the body (`render`), the request id, the
security, CORS and RateLimit headers, Server-Timing, the access line and the request metrics.

Only the plain case is served here; anything else goes to Flask unchanged, with the body it
was sent: another route or method, a body that is not JSON of a known length within the limit,
a body that does not validate (Flask answers the 4xx), an answer this worker does not hold
fresh in L1, a `Cache-Control` request header, API keys configured (authentication is Flask's), or a
rate limit that is reached or cannot be counted. A request the tracing edge sampled is served
here too, with the spans Flask's path would have made for it (`CachedSpans`): through Flask, a
sampled hit cost 4-5 unsampled ones, so 10 % sampling kept 0.71-0.79x of the unsampled
throughput (`make bench`, 2026-12-02).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from app.api._body import JSON_TYPE, VALIDATED, decode_body, render
from app.errors import APIError
from app.middleware import request_id
from app.observability.access import server_timing
from app.observability.tracing import TRACED
from app.schemas import OptimizeRequest
from app.security.headers import SECURITY, cors_headers
from app.security.limits import client_for
from config.settings import Settings

__all__ = ["CachedAnswers", "init_app"]

PATH = "/api/optimize"
# The attributes of the gateway's cache.lookup span for a hit of the optimize task
_LOOKUP_HIT = {"cache.namespace": "optimize", "cache.status": "hit"}
WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


def _is_json(content_type: str) -> bool:
    """What werkzeug's `Request.is_json` says for this Content-Type."""
    mimetype = content_type.partition(";")[0].strip().lower()
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


class CachedAnswers:
    """WSGI middleware: answers a fresh L1 hit of POST /api/optimize itself, passes on the rest."""

    def __init__(self, app: WSGIApp, flask_app: Flask, settings: Settings) -> None:
        self.app = app
        self._extensions = flask_app.extensions  # the service, log, metrics and limit: built later
        self._url_map = flask_app.url_map
        self._endpoint_name: str | None = None
        self._limit_bytes = settings.max_body_bytes
        self._origins = frozenset(settings.cors_origins)
        self._serves = not settings.api_keys

    def _endpoint(self) -> str:
        """The route's endpoint name, the label Flask's own metrics use (routes are registered
        after this middleware is built, so it is looked up on first use)."""
        if self._endpoint_name is None:
            self._endpoint_name = str(self._url_map.bind("").match(PATH, "POST")[0])
        return self._endpoint_name

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        started = time.perf_counter()
        started_ns = time.time_ns()
        if (
            not self._serves
            or environ.get("PATH_INFO") != PATH
            or environ.get("REQUEST_METHOD") != "POST"
            or "HTTP_CACHE_CONTROL" in environ
            or not _is_json(environ.get("CONTENT_TYPE", ""))
        ):
            return self.app(environ, start_response)
        length = environ.get("CONTENT_LENGTH", "")
        if not length.isdigit() or int(length) > self._limit_bytes:
            return self.app(environ, start_response)  # chunked or too large: Flask reads and answers
        raw: bytes = environ["wsgi.input"].read(int(length))
        environ["wsgi.input"] = io.BytesIO(raw)  # for Flask, if the request goes on to it
        answered = self._answer(environ, raw, started, started_ns)
        if answered is None:
            return self.app(environ, start_response)
        status, headers, body = answered
        start_response(status, headers)
        return [body]

    def _answer(
        self, environ: dict[str, Any], raw: bytes, started: float, started_ns: int
    ) -> tuple[str, list[tuple[str, str]], bytes] | None:
        try:
            body = decode_body(raw, OptimizeRequest)
        except APIError:
            return None  # Flask answers with the same 4xx error it always did
        environ[VALIDATED] = body  # a miss: Flask's view takes the body as validated here
        extensions = self._extensions
        limit = extensions.get("application_limit")
        limit_headers: list[tuple[str, str]] = []

        def admit() -> bool:  # the answer is here: count the request against the rate limit
            if limit is None:
                return True
            counted = limit.hit(client_for(environ.get("REMOTE_ADDR")))
            if counted is None:
                return False
            limit_headers.extend(counted)
            return True

        spans = extensions.get("cached_spans") if environ.get(TRACED) else None
        lookup_ns = time.time_ns()
        found = extensions["prompt_service"].fresh_optimize(body, admit)
        if found is None:
            return None
        metrics = extensions.get("request_metrics")
        if metrics is not None:
            metrics.started()
        answer, completion, lookup = found
        data = render(answer)
        rid = request_id(environ)
        total = time.perf_counter() - started
        headers = [
            ("Content-Type", JSON_TYPE),
            ("Content-Length", str(len(data))),
            ("X-Cache", completion.cache_status),
            ("Age", str(completion.age)),
            *limit_headers,
            *SECURITY,
            *cors_headers(self._origins, environ.get("HTTP_ORIGIN"), "POST"),
            ("Server-Timing", server_timing(total, lookup, 0.0)),
            ("X-Request-ID", rid),
        ]
        endpoint = self._endpoint()
        trace_id = None
        if spans is not None:
            lookup_span = (lookup_ns, lookup_ns + int(lookup * 1e9), _LOOKUP_HIT)
            trace_id = spans.record(environ, PATH, "200 OK", headers, rid, started_ns, lookup_span)
        access = extensions["access_log"]
        if access.enabled():
            fields = access.fields("POST", endpoint, 200, total, rid, "HIT", 0.0, (0, 0))
            if trace_id is not None:
                fields["trace_id"] = trace_id  # no span is current here: this request's is ended
            access.write(fields)
        if metrics is not None:
            metrics.answered("POST", endpoint, 200, total, 0.0)
            metrics.ended()
        return "200 OK", headers, data


def init_app(app: Flask, settings: Settings) -> None:
    """Put the cached-answer path in front of the app (inside ProxyFix and the tracing edge,
    which wrap it later: it sees the caller's address and the edge's sampling decision)."""
    app.wsgi_app = CachedAnswers(app.wsgi_app, app, settings)  # type: ignore[method-assign]
