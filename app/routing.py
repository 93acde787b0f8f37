"""The one route decision: what a request's path and method route to, found once by Werkzeug's
own matcher (the one Flask uses) and then trusted by everything that depends on it — the guard
(API key, rate limit, budgets, metrics token), the handler, the metric and log labels — and by
Flask itself, which is handed the match instead of routing the path again.

Two routers that disagree are a hole: a path spelled `//api/optimize` once reached the model
without a key because the guard read the raw path while Flask merged its slashes. Here the
guard's class is a property of the *rule* matched (its canonical path), never of the spelling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from flask.ctx import RequestContext
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, MapAdapter, RequestRedirect, Rule

__all__ = ["ENVIRON_KEY", "Guard", "Route", "RoutedRequestContext", "Router", "redirect_location"]

ENVIRON_KEY = "prompt_builder.route"
Guard = Literal["api", "operator", "open"]
_OPERATOR_RULES = frozenset(("/metrics", "/stats"))


def _guard_of(rule: Rule) -> Guard:
    """Who may call a rule: API keys for /api/* and /graphql, the metrics token for the
    operator views."""
    if rule.rule.startswith("/api/") or rule.rule == "/graphql":
        return "api"
    if rule.rule in _OPERATOR_RULES:
        return "operator"
    return "open"


@dataclass(frozen=True, slots=True)
class Route:
    """What a request routes to: a rule and its arguments, or the routing error to answer."""

    rule: Rule | None
    args: dict[str, Any] = field(default_factory=dict)
    error: HTTPException | None = None

    @property
    def endpoint(self) -> str:
        """The endpoint's name (a bounded label), `none` when nothing was routed."""
        return self.rule.endpoint if self.rule is not None else "none"

    @property
    def guard(self) -> Guard:
        return _guard_of(self.rule) if self.rule is not None else "open"


class Router:
    """Werkzeug's matcher over the app's url_map, bound once; the canonical spelling of each
    fixed path is answered from a table filled *by that matcher* when the router is built, so
    the table can never say something the matcher would not."""

    def __init__(self, url_map: Map) -> None:
        self._adapter: MapAdapter = url_map.bind("localhost", "/")
        self._fixed: dict[tuple[str, str], Route] = {}
        for rule in url_map.iter_rules():
            if rule.arguments:
                continue
            for method in rule.methods or ():
                found = self._match(rule.rule, method, "")
                if found.rule is not None:
                    self._fixed[(rule.rule, method)] = found

    def route(self, environ: dict[str, Any]) -> Route:
        path, method = environ.get("PATH_INFO", "") or "/", environ["REQUEST_METHOD"]
        found = self._fixed.get((path, method))
        if found is not None:
            return found
        return self._match(path, method, environ.get("QUERY_STRING", ""))

    def _match(self, path: str, method: str, query: str) -> Route:
        try:
            rule, args = self._adapter.match(path, method, return_rule=True, query_args=query)
        except HTTPException as exc:  # not found, not allowed, a redirect (RequestRedirect): no route
            return Route(None, error=exc)
        return Route(rule, dict(args))


def redirect_location(error: RequestRedirect) -> str:
    """The canonical path (and query) a RequestRedirect points to, without the bound host."""
    parts = urlsplit(error.new_url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


class RoutedRequestContext(RequestContext):
    """Flask's request context, taking the pipeline's route instead of matching again."""

    def match_request(self) -> None:
        found: Route | None = self.request.environ.get(ENVIRON_KEY)
        if found is None:  # a request that did not come through the pipeline
            super().match_request()
            return
        if found.error is not None:
            self.request.routing_exception = found.error
            return
        self.request.url_rule, self.request.view_args = found.rule, dict(found.args)
