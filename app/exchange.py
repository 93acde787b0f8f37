"""One request's facts, from the moment it arrives to its access line: its id, start time,
tracing decision, endpoint, caller and what the gateway did for it (cache, upstream, tokens).

The pipeline (app.pipeline) creates it and makes it current for the request's greenlet; a JSON
handler's answer comes back with the gateway's Completion, whose facts the pipeline hands it
(`told`); the error handlers and the tracer read it there. Outside a request `current()` is None.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from app.tenancy import ANONYMOUS, Caller

if TYPE_CHECKING:
    from app.routing import Route

__all__ = ["Exchange", "current", "enter", "leave", "new_request_id", "request_id"]

_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def new_request_id() -> str:
    """Return 32 random hex digits: what uuid4().hex gives, without building a UUID."""
    return os.urandom(16).hex()


def request_id(environ: dict[str, Any]) -> str:
    """Return the caller's X-Request-ID when it is safe to echo and log, else a new id."""
    incoming = environ.get("HTTP_X_REQUEST_ID")
    return incoming if incoming and _SAFE_ID.fullmatch(incoming) else new_request_id()


class Facts(Protocol):
    """What the gateway tells of an answer (app.gateway.values.Completion)."""

    @property
    def cache_status(self) -> str: ...

    @property
    def cache_seconds(self) -> float | None: ...

    @property
    def upstream_seconds(self) -> float: ...

    @property
    def spent(self) -> tuple[int, int]: ...

    @property
    def key(self) -> str: ...

    @property
    def mode(self) -> str: ...


@dataclass(slots=True)
class Exchange:
    """One request as the pipeline sees it."""

    environ: dict[str, Any]
    request_id: str
    started: float  # time.perf_counter() when it arrived
    traced: bool = False  # the edge sampled it
    endpoint: str = "none"  # the route's name (metric and log label): never the raw path
    route: str | None = None  # the route's rule, e.g. /api/optimize
    routed: Route | None = None  # the one route decision (app.routing), made by the pipeline
    client: str = ""  # who the rate limit counts: key:<name> or ip:<address>
    authenticated: bool = False
    key: str | None = None  # the API key's name (never its secret)
    scope: str | None = None  # the name its answers are kept apart under (cache scope key), or None
    trace_id: str | None = None  # hex, when traced
    cache_seconds: float | None = None
    cache_status: str | None = None  # the answer's X-Cache, as its handler found it (HIT, MISS, ...)
    upstream_seconds: float = 0.0
    tokens: tuple[int, int] = (0, 0)
    asked: str | None = None  # the answer's cache key (its digest goes in the access line: traces)
    mode: str | None = None  # the request's mode
    limit_headers: list[tuple[str, str]] = field(default_factory=list)
    rate_limited: bool = False  # refused by the rate limit (a 429 for a spent budget is not)

    def told(self, completion: Facts) -> None:
        """The facts of the answer its handler returned: for the access line and Server-Timing."""
        self.cache_status = completion.cache_status
        self.cache_seconds = completion.cache_seconds
        self.upstream_seconds = completion.upstream_seconds
        self.tokens = completion.spent
        self.asked, self.mode = completion.key or None, completion.mode or None

    @property
    def caller(self) -> Caller:
        """Who asks, as the gateway is told: the key (budgets, usage) and the cache scope."""
        return Caller(self.key, self.scope) if self.key is not None or self.scope is not None else ANONYMOUS


_current: ContextVar[Exchange | None] = ContextVar("prompt_builder_exchange", default=None)


def current() -> Exchange | None:
    """The request this greenlet is serving, if any."""
    return _current.get()


def enter(exchange: Exchange) -> Any:
    """Make `exchange` current; return the token `leave` takes."""
    return _current.set(exchange)


def leave(token: Any) -> None:
    _current.reset(token)
