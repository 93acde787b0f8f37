"""The one request pipeline: every request passes through here, whichever handler answers it.

    edge     request id, start time, the tracing decision; http_active_requests up (and, however
             the request ends, back down)
    route    the one route decision (app.routing): Werkzeug's match of the path and method, which
             names the endpoint for metrics, logs and spans, picks the guard and the handler,
             and is handed to Flask so that Flask never routes the path a second time; a path
             that routes nowhere is answered here (JSON 404, 405, 308)
    span     a sampled request runs inside its server span (app.observability.tracing)
    guard    by the matched rule, never the spelling of the path: API key (401/403) or the
             metrics token, then the rate limit (429; 503 when it cannot be counted)
    handler  a JSON endpoint's `handle` (app.api) — the shortcut past Flask's routing and
             request objects — /graphql's (app.graph), which counts each of its operations
             against the rate limit through the same admission step, or Flask for everything
             else (streams, health, stats, errors)
    finish   RateLimit, security, Cache-Control, CORS, Server-Timing and X-Request-ID headers;
             the request metrics and the access line, a stream's when it ends
             (app.observability.recording)

What a caller and an operator see of an answer is made here for every handler, so a cached
answer and any other are alike by construction. A fault in the pipeline's own steps (the access
line, the metrics, a span) answers JSON 500 with the request id, counts nothing twice, and
leaves the next request unaffected.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from app.api import JSON_ENDPOINTS
from app.errors import APIError, api_error_parts, http_error_parts, unexpected_error_parts
from app.exchange import Exchange, enter, leave, request_id
from app.graph.endpoint import graph_error_parts
from app.observability.access import server_timing
from app.observability.recording import Recording
from app.parts import Parts
from app.routing import ENVIRON_KEY, Router
from app.security.headers import SECURITY, cors_headers
from app.security.limits import client_for

__all__ = ["Pipeline", "pipeline_of"]

log = logging.getLogger(__name__)

Body = bytes | Iterable[bytes]
Result = tuple[str, list[tuple[str, str]], Body]
StartResponse = Callable[..., Any]
_STREAM_TYPE = "text/event-stream"


def _no_write(data: bytes) -> None:
    raise RuntimeError("the pipeline's handlers return their body; they never write()")


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers:
        if key.lower() == lowered:
            return value
    return None


class Pipeline:
    """The app's WSGI entry (inside ProxyFix): see the module's docstring for its steps."""

    def __init__(self, flask_app: Flask, parts: Parts, flask_entry: Callable[..., Iterable[bytes]]) -> None:
        """`flask_entry` is Flask's own WSGI entry (routing, views, error handlers); `parts`,
        the app's. Build after the blueprints are registered: the routes are read once here."""
        self._flask = flask_entry
        settings = parts.settings
        self._prompts = parts.prompts
        self._jobs = parts.jobs or parts.jobs_unavailable
        self._max_body = settings.max_body_bytes
        self._origins = frozenset(settings.cors_origins)
        self._credentials = parts.credentials if parts.credentials else None
        self._limit = parts.limit
        self._graph = parts.graph
        self._recording = Recording(parts.access, parts.instruments.recorder if parts.instruments is not None else None)
        tracing = parts.tracing
        self._decide = tracing.decide if tracing is not None else None
        self._tracing = tracing
        self._router = Router(flask_app.url_map)
        # The JSON endpoints' handlers, by the name of the rule that routes to each.
        by_path = {endpoint.path: endpoint for endpoint in JSON_ENDPOINTS}
        self._handlers = {
            rule.endpoint: by_path[rule.rule]
            for rule in flask_app.url_map.iter_rules()
            if rule.rule in by_path and "POST" in (rule.methods or ())
        }
        self.shortcut = True  # False: the JSON endpoints too are answered by Flask's views

    # --- edge -------------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        exchange = Exchange(environ, request_id(environ), time.perf_counter())
        if self._decide is not None:
            exchange.traced = self._decide(environ)
        token = enter(exchange)
        recording, counted = self._recording, False
        body: Body = b""
        try:
            counted = recording.started(exchange)
            status, headers, body = self._answer(exchange)
            if not isinstance(body, bytes):  # a stream: recorded, and ended, when it ends
                body, counted = recording.streamed(exchange, status, headers, body), False
        finally:
            leave(token)
            if counted:
                recording.ended(exchange)
        start_response(status, headers)
        return [body] if isinstance(body, bytes) else body

    def _answer(self, exchange: Exchange) -> Result:
        """The answer and its headers, recorded; a fault in any step: JSON 500, recorded once."""
        try:
            status, headers, body = self._respond(exchange)
        except Exception:
            exchange.cache_status = None  # a 500 answers, not the cached answer
            status, headers, body = unexpected_error_parts()
        self._finish(exchange, status, headers)
        if isinstance(body, bytes):
            attempted: set[str] = set()
            try:
                self._recording.record(exchange, status, headers, attempted)
            except Exception:  # the answer is not sent: the caller gets the 500 instead
                exchange.cache_status = None
                status, headers, body = unexpected_error_parts()
                self._finish(exchange, status, headers)
                try:  # in the sinks not yet tried; each is tried once a request
                    self._recording.record(exchange, status, headers, attempted)
                except Exception:
                    log.exception("recording a request failed", extra={"request_id": exchange.request_id})
        return status, headers, body

    # --- route, span, guard, handler -------------------------------------------------------------------

    def _respond(self, exchange: Exchange) -> Result:
        environ = exchange.environ
        route = exchange.routed = environ[ENVIRON_KEY] = self._router.route(environ)
        if route.rule is not None:
            exchange.route, exchange.endpoint = route.rule.rule, route.rule.endpoint
        if exchange.traced and self._tracing is not None:
            return self._tracing.serve(exchange, self._core)
        return self._core(exchange)

    def _core(self, exchange: Exchange) -> Result:
        """Guard, then handler, both from the one route found in `_respond`."""
        environ = exchange.environ
        method, route = environ["REQUEST_METHOD"], exchange.routed
        assert route is not None
        if route.error is not None:  # routes nowhere: no handler runs, nothing to guard
            return http_error_parts(route.error, environ.get("PATH_INFO", ""))
        graph = self._graph if route.endpoint == "graphql" else None
        try:
            guard = route.guard
            if self._credentials is not None and guard != "open":
                name = self._credentials.check(method, guard, environ)
                if name is not None:
                    exchange.client, exchange.authenticated, exchange.key = f"key:{name}", True, name
                    exchange.scope = self._credentials.scoped_name(name)
            if graph is not None and method != "OPTIONS":  # counts its operations, not the request
                answer, facts = graph.handle(environ, lambda count: self._admit(exchange, count))
                if facts is not None:
                    exchange.told(facts)
                return answer if method != "HEAD" else (answer[0], answer[1], b"")
            # Routed /api/* requests only; a CORS preflight is never counted.
            if guard == "api" and method != "OPTIONS":
                self._admit(exchange, 1)
            if method != "OPTIONS" and self.shortcut:
                handler = self._handlers.get(route.endpoint)
                if handler is not None:
                    answer, completion = handler.handle(environ, self._prompts, self._max_body, self._jobs)
                    if completion is not None:
                        exchange.told(completion)
                    return answer if method != "HEAD" else (answer[0], answer[1], b"")
        except APIError as error:
            return graph_error_parts(error) if graph is not None else api_error_parts(error)
        return self._through(self._flask, environ)

    def _admit(self, exchange: Exchange, cost: int) -> None:
        """The one rate-limit decision: count `cost` requests of the caller (a GraphQL request:
        one per operation), or raise 429 (503 when the count cannot be made)."""
        limit = self._limit
        if limit is None:
            return
        verdict = limit.hit(exchange.client or client_for(exchange.environ.get("REMOTE_ADDR")), exchange.key, cost)
        exchange.limit_headers = verdict.headers
        if not verdict.allowed:
            exchange.rate_limited = True
            raise limit.refused(verdict)

    @staticmethod
    def _through(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> Result:
        """Run a WSGI app; return its answer as parts (a body that is not a stream, read whole
        and closed: a span or a handler's clean-up ends here, inside the pipeline)."""
        captured: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured[:] = [status, list(headers)]
            return _no_write

        iterable = app(environ, start_response)
        status, headers = captured
        if (_header(headers, "Content-Type") or "").startswith(_STREAM_TYPE):
            return status, headers, iterable
        try:
            body = b"".join(iterable)
        finally:
            close = getattr(iterable, "close", None)
            if close is not None:
                close()
        return status, headers, body

    # --- finish -------------------------------------------------------------------------------------

    def _finish(self, exchange: Exchange, status: str, headers: list[tuple[str, str]]) -> None:
        """The headers every answer carries, in one order."""
        headers += exchange.limit_headers
        headers += SECURITY
        if exchange.authenticated:  # an answer for one key is no one else's: never stored
            headers[:] = [(k, v) for k, v in headers if k.lower() != "cache-control"]
            headers.append(("Cache-Control", "no-store"))
        elif _header(headers, "Cache-Control") is None:  # shared only where a handler says so (app.api._edge)
            headers.append(("Cache-Control", "no-store"))
        if self._origins:
            headers += cors_headers(
                self._origins, exchange.environ.get("HTTP_ORIGIN"), exchange.environ["REQUEST_METHOD"]
            )
        total = time.perf_counter() - exchange.started
        headers.append(("Server-Timing", server_timing(total, exchange.cache_seconds, exchange.upstream_seconds)))
        headers.append(("X-Request-ID", exchange.request_id))


def pipeline_of(app: Flask) -> Pipeline:
    """The pipeline in front of `app` (under ProxyFix, when TRUSTED_PROXIES is set)."""
    found: Any = app.wsgi_app
    while not isinstance(found, Pipeline):
        found = found.app
    return found
