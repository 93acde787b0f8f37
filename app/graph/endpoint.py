"""`/graphql`: the six operations as one GraphQL schema, answered inside the request pipeline.

The pipeline routes, checks the key and renders refusals as it does for REST; this handler reads
the documents (app.graph.documents), asks the pipeline's one admission step to count every
operation against the caller's rate limit (`admit(n)`: a batch of ten costs ten, all or none),
then runs the operations of the whole request at once, one greenlet each, through the same
operations REST calls (cache, coalescing with REST and stream callers, budgets, breaker), so a
batch takes about as long as its slowest operation. Each document's answer is then shaped from
the results by the selection it asked for (app.graph.shaping).

Errors carry `extensions.code` and the HTTP `status` a REST caller would get for the same
failure (with `retryAfter` where REST sends Retry-After). The HTTP status is 200 when any
operation answered; when none did and all failed alike, that failure's status (and Retry-After).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any

import gevent
from graphql import GraphQLError
from pydantic import BaseModel, ValidationError

from app.api._body import cache_policy, caller, describe, read_json
from app.api._edge import caching_headers, etag_of, not_modified
from app.errors import APIError, ValidationFailedError, retry_after_seconds
from app.gateway import Completion, NotCached
from app.gateway.tracer import spawn
from app.graph.documents import Documents, Plan
from app.graph.reading import RequestError, read_requests
from app.graph.schema import FIELDS, build_schema
from app.graph.shaping import shape
from app.render import Answer, json_parts
from app.services import CachePolicy, PromptService
from app.tenancy import Caller

__all__ = ["GraphEndpoint", "graph_error_parts"]

log = logging.getLogger(__name__)
Admit = Callable[[int], None]


def _code(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.upper().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "INTERNAL_SERVER_ERROR"


def error_of(error: APIError) -> dict[str, Any]:
    """An APIError as a GraphQL error: the REST answer's words, status and Retry-After."""
    extensions: dict[str, Any] = {
        "code": getattr(error, "code", None) or _code(error.status_code),
        "status": error.status_code,
        "details": error.details,
    }
    if error.retry_after is not None:
        extensions["retryAfter"] = retry_after_seconds(error.retry_after)
    return {"message": error.message, "extensions": extensions}


def _refusal(error: APIError) -> list[dict[str, Any]]:
    """The errors a refused document answers: each GraphQL error it found, else the one refusal."""
    found = error.errors if isinstance(error, RequestError) else []
    if not found:
        return [error_of(error)]
    code = error_of(error)["extensions"]
    return [{**e.formatted, "extensions": {"code": code["code"], "status": code["status"]}} for e in found]


def graph_error_parts(error: APIError) -> Answer:
    """A refusal of the whole request (the pipeline's key check, rate limit...) as GraphQL."""
    retry = error.retry_after
    headers = [("Retry-After", str(retry_after_seconds(retry)))] if retry is not None else []
    return json_parts(error.status_code, {"errors": _refusal(error)}, headers)


@dataclass(frozen=True, slots=True)
class BatchFacts:
    """What the gateway did for a whole request, for the access line and Server-Timing: one
    status when every operation had it (else MIXED), the tokens of all, the longest wait."""

    cache_status: str
    cache_seconds: float | None
    upstream_seconds: float
    spent: tuple[int, int]
    key: str
    mode: str


def _facts(completions: list[Completion]) -> BatchFacts | None:
    if not completions:
        return None
    statuses = {c.cache_status for c in completions}
    one = completions[0] if len(completions) == 1 else None
    return BatchFacts(
        statuses.pop() if len(statuses) == 1 else "MIXED",
        max((c.cache_seconds or 0.0 for c in completions), default=None),
        max(c.upstream_seconds for c in completions),
        (sum(c.spent[0] for c in completions), sum(c.spent[1] for c in completions)),
        one.key if one is not None else "",
        one.mode if one is not None else "",
    )


class GraphEndpoint:
    """The handler of /graphql (see the module's docstring)."""

    def __init__(
        self,
        prompts: PromptService,
        *,
        max_body: int,
        most: int,
        introspection: bool,
        counted: Callable[[str, int], None] | None = None,
    ) -> None:
        """`counted(field, status)`: told of each operation's outcome (the metrics)."""
        shared = prompts.gateway.l2
        self.documents = Documents(build_schema(), introspection=introspection, shared=shared)
        self._prompts, self._tracer = prompts, prompts.gateway.core.tracer
        self._max_body, self._most, self._counted = max_body, most, counted

    def handle(self, environ: dict[str, Any], admit: Admit) -> tuple[Answer, BatchFacts | None]:
        method = environ["REQUEST_METHOD"]
        raw = read_json(environ, self._max_body) if method == "POST" else None
        if raw is None and len(environ.get("QUERY_STRING", "")) > 3 * self._max_body:
            raise RequestError("the query string is longer than MAX_BODY_BYTES", "PAYLOAD_TOO_LARGE", status=413)
        requests, batched = read_requests(method, raw, environ.get("QUERY_STRING", ""), self._most)
        plans: list[Plan | RequestError] = []
        for request in requests:
            try:
                plans.append(self.documents.plan(request, method))
            except RequestError as error:
                if not batched:
                    raise
                plans.append(error)
        count = sum(len(plan.operations) for plan in plans if isinstance(plan, Plan))
        if count > self._most:
            raise RequestError(
                f"{count} operations in one request: at most {self._most} (GRAPHQL_MAX_OPERATIONS)",
                "TOO_MANY_OPERATIONS",
            )
        if count:
            admit(count)
        policy, who = cache_policy(environ), caller(environ)
        outcomes, completions = self._run(plans, policy, who)
        answers = [self._answer(plan, outcome) for plan, outcome in zip(plans, outcomes, strict=True)]
        status, headers = _status(answers)
        body: Any = answers if batched else answers[0]
        parts = json_parts(status, body, headers)
        facts = _facts(completions)
        if method == "GET" and status == 200 and completions and not any("errors" in a for a in answers):
            etag = etag_of(parts[2])
            shared = caching_headers(
                etag, _freshest(completions), policy.write and who.key is None, self._prompts.stale_seconds, time.time()
            )
            parts[1].extend(shared)
            return not_modified(environ, etag, parts[1]) or parts, facts
        return parts, facts

    def _run(
        self, plans: list[Plan | RequestError], policy: CachePolicy, who: Caller
    ) -> tuple[list[dict[str, Any]], list[Completion]]:
        """Every operation of the request at once: an answer fresh in this worker's memory at
        once, in the request's greenlet (a greenlet costs more than such a hit); every other in
        a greenlet of its own, all of them running together. Per plan, its results by response
        key (an answer, or the GraphQLError it ended with)."""
        outcomes: list[dict[str, Any]] = [{} for _ in plans]
        done: list[tuple[dict[str, Any], str, Any]] = []
        waiting: list[tuple[dict[str, Any], str, gevent.Greenlet]] = []
        peek = replace(policy, peek=True)
        for plan, found in zip(plans, outcomes, strict=True):
            if isinstance(plan, RequestError):
                continue
            for planned in plan.operations:
                body = _validated(planned.field, planned.input)
                if isinstance(body, APIError):
                    done.append((found, planned.key, self._counted_now(planned.field, body)))
                    continue
                outcome = self._operation(planned.field, body, peek, who) if policy.read else None
                if outcome is None:
                    args = (planned.field, body, policy, who)
                    waiting.append((found, planned.key, spawn(self._tracer, self._operation, *args)))
                else:
                    done.append((found, planned.key, outcome))
        gevent.joinall([greenlet for _, _, greenlet in waiting])
        done += [
            (found, key, greenlet.value if greenlet.successful() else APIError()) for found, key, greenlet in waiting
        ]
        completions: list[Completion] = []
        for found, key, outcome in done:
            if isinstance(outcome, APIError):
                found[key] = _graph_error(outcome)
            else:
                found[key], completion = outcome
                completions.append(completion)
        return outcomes, completions

    def _operation(
        self, field: str, body: BaseModel, policy: CachePolicy, who: Caller
    ) -> tuple[Any, Completion] | APIError | None:
        """One operation's answer, or the APIError it ended with (never raised: a greenlet),
        in a span of its own; None when `policy` peeks and this worker's memory holds no fresh
        answer. A peek has no span (a miss would leave an empty one): an answer it finds is
        an event of the request's span, as a REST caller's L1 hit is that one span."""
        if policy.peek:
            outcome, status = self._answer_operation(field, body, policy, who)
            if outcome is not None:
                self._tracer.current().add_event(
                    "graphql.operation", {"graphql.field": field, "http.status_code": status}
                )
        else:
            with self._tracer.span("graphql.operation", {"graphql.field": field}) as span:
                outcome, status = self._answer_operation(field, body, policy, who)
                span.set_attribute("http.status_code", status)
        if outcome is not None and self._counted is not None:
            self._counted(field, status)
        return outcome

    def _counted_now(self, field: str, error: APIError) -> APIError:
        """An operation refused before it ran (its input invalid), counted as its outcome."""
        if self._counted is not None:
            self._counted(field, error.status_code)
        return error

    def _answer_operation(
        self, field: str, body: BaseModel, policy: CachePolicy, who: Caller
    ) -> tuple[tuple[Any, Completion] | APIError | None, int]:
        try:
            return FIELDS[field].answer(self._prompts, body, policy, who), 200
        except NotCached:
            return None, 0
        except APIError as error:
            return error, error.status_code
        except Exception:
            log.exception("a GraphQL operation failed", extra={"graphql_field": field})
            return APIError(), 500

    def _answer(self, plan: Plan | RequestError, outcome: dict[str, Any]) -> dict[str, Any]:
        if isinstance(plan, RequestError):
            return {"errors": _refusal(plan)}
        return shape(self.documents.schema, plan.document, plan.operation, plan.coerced, plan.variables, outcome)


def _validated(field: str, data: dict[str, Any]) -> BaseModel | APIError:
    """An operation's input as its REST body's model validates it, with REST's words if not."""
    try:
        return FIELDS[field].model.model_validate(data)
    except ValidationError as exc:
        return ValidationFailedError(details=describe(exc)[:2000])


def _graph_error(error: APIError) -> GraphQLError:
    formatted = error_of(error)
    return GraphQLError(formatted["message"], extensions=formatted["extensions"])


def _freshest(completions: list[Completion]) -> Completion:
    """The answer that stops being fresh first (or a stale one): the whole answer's lifetime."""
    stale = [c for c in completions if c.cache_status == "STALE"]
    return stale[0] if stale else min(completions, key=lambda c: c.fresh_until)


def _status(answers: list[dict[str, Any]]) -> tuple[int, list[tuple[str, str]]]:
    """200 when any operation answered; else the one status all failures share (Retry-After the
    longest), or 200 when they differ or nothing ran (a persisted query unknown: the protocol's)."""
    if any(value is not None for answer in answers for value in (answer.get("data") or {}).values()):
        return 200, []
    errors = [error.get("extensions", {}) for answer in answers for error in answer.get("errors", ())]
    statuses = {int(e.get("status", 200)) for e in errors}
    if len(statuses) != 1:
        return 200, []
    status = statuses.pop()
    waits = [int(e["retryAfter"]) for e in errors if "retryAfter" in e]
    return status, [("Retry-After", str(max(waits)))] if waits else []
