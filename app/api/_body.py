"""What every JSON endpoint shares: read and validate the body, read Cache-Control, answer.

A `JsonEndpoint` is one of the six endpoints that answer JSON: a POST with the request as its
body, or the same request as a GET with the body in its URL (`?body=<the JSON, URL-encoded>`,
app.api._edge). Its `handle` works on the WSGI environ and returns WSGI parts, so the request
pipeline (app.pipeline) can run it without Flask's routing and request objects, and its Flask
view runs the same `handle`: one code path for the answer, whichever way the request came in.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, get_args
from urllib.parse import parse_qsl

from flask import Response, request
from pydantic import BaseModel, RootModel, ValidationError
from pydantic.fields import FieldInfo
from werkzeug.wrappers import Request

from app.api._accepted import submit_async, wants_async
from app.api._edge import DOOR_PARAMETER, caching_headers, etag_of, not_modified
from app.errors import (
    MalformedJSONError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UnsupportedMediaTypeError,
    ValidationFailedError,
)
from app.exchange import current
from app.gateway import Completion
from app.jobs.service import Jobs, JobsUnavailable
from app.parts import parts
from app.render import JSON_TYPE, Answer, render, status_line
from app.services import CachePolicy, PromptService
from app.services.operations import Operation
from app.tenancy import ANONYMOUS, Caller

__all__ = ["JsonEndpoint", "cache_policy", "caller", "decode_body", "describe", "read_body", "read_json"]

M = TypeVar("M", bound=BaseModel)


def caller(environ: dict[str, Any]) -> Caller:
    """Who asks: the request's key and cache scope, as the pipeline found them."""
    exchange = current()
    return exchange.caller if exchange is not None else ANONYMOUS


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def describe(error: ValidationError) -> str:
    """Every invalid field with its reason, in the body's order: `a: Field required; b.c: ...`.
    Each reason is cut at 200 characters, so one long message cannot hide the fields after it."""
    parts_ = []
    for problem in error.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in problem["loc"]) or "body"
        parts_.append(f"{where}: {problem['msg'][:200]}")
    return "; ".join(parts_)


def _read(environ: dict[str, Any], limit: int) -> bytes:
    """Return the body, or raise 413 when it is over `limit` bytes however it arrives, or 408
    when it does not arrive within the server's body deadline (config.worker.DeadlineBody)."""
    try:
        return _read_within(environ, limit)
    except TimeoutError:
        raise RequestTimeoutError() from None


def _read_within(environ: dict[str, Any], limit: int) -> bytes:
    length = environ.get("CONTENT_LENGTH", "")
    if length.isdigit():
        if int(length) > limit:
            raise PayloadTooLargeError(details=f"limit is {limit} bytes")
        # The server's stream ends at Content-Length. A short body fails as JSON below.
        body: bytes = environ["wsgi.input"].read(int(length))
        return body
    # Chunked (no Content-Length): read one byte past the limit from the server's own
    # (de-chunked) stream to tell "exactly the limit" from "over it".
    raw: bytes = environ["wsgi.input"].read(limit + 1)
    if len(raw) > limit:
        raise PayloadTooLargeError(details=f"limit is {limit} bytes")
    return raw


_ONE_PARAMETER = f"a GET carries its request as its one query parameter: ?{DOOR_PARAMETER}=<the JSON body, URL-encoded>"


def _query_body(environ: dict[str, Any], limit: int) -> bytes:
    """A GET's request: the JSON document in its one query parameter, URL-encoded."""
    query = environ.get("QUERY_STRING", "")
    if len(query) > 3 * limit + len(DOOR_PARAMETER) + 1:  # each byte at most %XX
        raise PayloadTooLargeError(details=f"limit is {limit} bytes")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True, errors="strict", max_num_fields=1)
    except UnicodeDecodeError:
        raise MalformedJSONError(details=f"{DOOR_PARAMETER} is not valid UTF-8") from None
    except ValueError:  # more than one field, or a field without "="
        raise ValidationFailedError(details=_ONE_PARAMETER) from None
    if len(pairs) != 1 or pairs[0][0] != DOOR_PARAMETER:
        raise ValidationFailedError(details=_ONE_PARAMETER)
    data = pairs[0][1].encode()
    if len(data) > limit:
        raise PayloadTooLargeError(details=f"limit is {limit} bytes")
    return data


def read_body(environ: dict[str, Any], model: type[M], limit: int) -> M:
    """Return the request validated as `model` — a POST's body, a GET's `?body=` — or raise
    the matching 4xx error."""
    if environ["REQUEST_METHOD"] != "POST":
        return decode_body(_query_body(environ, limit), model)
    return decode_body(read_json(environ, limit), model)


def read_json(environ: dict[str, Any], limit: int) -> bytes:
    """A POST's body, unparsed: 415 unless it says it is JSON, 413 over `limit`, 408 when late."""
    # The common exact value answered at once; any other asks werkzeug (parameters, +json types).
    if environ.get("CONTENT_TYPE") != JSON_TYPE and not Request(environ, shallow=True).is_json:
        raise UnsupportedMediaTypeError()
    return _read(environ, limit)


def decode_body(raw: bytes, model: type[M]) -> M:
    """Return the JSON document `raw` validated as `model`, or raise the matching 4xx error."""
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise MalformedJSONError(details="request body is not valid UTF-8") from None
    except (ValueError, RecursionError) as exc:
        detail = "nesting too deep" if isinstance(exc, RecursionError) else str(exc)
        raise MalformedJSONError(details=detail[:200]) from None
    if not isinstance(data, dict):
        raise ValidationFailedError(details="request body must be a JSON object")
    _refuse_unknown(data, (model,), "")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailedError(details=describe(exc)[:2000]) from None


_NAMED_UNKNOWN = 20  # unknown keys named in a 400; the rest are counted


def _refuse_unknown(data: dict[str, Any], models: tuple[type[BaseModel], ...], where: str) -> None:
    """Refuse a body with many keys no model declares before full validation: a 1 MB body of
    60,000 unknown keys cost a worker 0.2-1 s in pydantic (an error built per key) and costs a set
    lookup each here. A few unknown keys are left to pydantic, which names every invalid field.
    Nested request models are checked the same way; a union once its member is known by its
    `task`; anything else is left to pydantic."""
    model = _member(data, models)
    if model is None:
        return
    fields = _fields(model)
    unknown = [key for key in data if key not in fields]
    if len(unknown) > _NAMED_UNKNOWN:
        named = "; ".join(f"{where}{key}: Extra inputs are not permitted" for key in unknown[:_NAMED_UNKNOWN])
        more = len(unknown) - _NAMED_UNKNOWN
        raise ValidationFailedError(details=f"{named}; and {more} more unknown keys")
    for key, members in fields.items():
        value = data.get(key)
        if members and isinstance(value, dict):
            _refuse_unknown(value, members, f"{where}{key}.")


def _member(data: dict[str, Any], models: tuple[type[BaseModel], ...]) -> type[BaseModel] | None:
    """The one model of `models` that `data` is meant for (a union: by its `task`), or None."""
    if len(models) == 1:
        (model,) = models
        if issubclass(model, RootModel):
            return _member(data, _models_in(model.model_fields["root"].annotation))
        return model
    chosen = [m for m in models if data.get("task") in get_args(m.model_fields.get("task", _NO_TASK).annotation)]
    return chosen[0] if len(chosen) == 1 else None


_NO_TASK = FieldInfo(annotation=None)


@functools.cache
def _fields(model: type[BaseModel]) -> dict[str, tuple[type[BaseModel], ...]]:
    """Each key `model` accepts, with the request models its value may be (none: not a model)."""
    return {(info.alias or name): _models_in(info.annotation) for name, info in model.model_fields.items()}


def _models_in(annotation: Any) -> tuple[type[BaseModel], ...]:
    """The pydantic models an annotation may hold: X, X | None, Annotated[X | Y, ...]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return (annotation,)
    return tuple(model for arg in get_args(annotation) for model in _models_in(arg))


_DEFAULT_POLICY = CachePolicy()


def cache_policy(environ: dict[str, Any]) -> CachePolicy:
    """Read the request's Cache-Control: no-cache skips the read, no-store skips everything."""
    if "HTTP_CACHE_CONTROL" not in environ:
        return _DEFAULT_POLICY  # most requests: no header to parse
    control = Request(environ, shallow=True).cache_control
    if control.no_store:
        return CachePolicy(read=False, write=False)
    if control.no_cache:
        return CachePolicy(read=False, write=True)
    return _DEFAULT_POLICY


@dataclass(frozen=True)
class JsonEndpoint(Generic[M]):
    """One endpoint that answers JSON: `/api/<name>` of an operation (app.services.operations),
    POST or GET."""

    operation: Operation[M]

    @property
    def name(self) -> str:
        """The operation's name (a job's task)."""
        return self.operation.name

    @property
    def path(self) -> str:
        return "/api/" + self.operation.name

    @property
    def model(self) -> type[M]:
        return self.operation.model

    @property
    def answer(self) -> Callable[[PromptService, M, CachePolicy, Caller], tuple[dict[str, Any], Completion]]:
        return self.operation.answer

    def handle(
        self, environ: dict[str, Any], prompts: PromptService, limit: int, jobs: Jobs | JobsUnavailable | None = None
    ) -> tuple[Answer, Completion | None]:
        """Answer the request in `environ`: 200 with X-Cache (and Age for a cached answer), or
        raise the APIError that says what went wrong. With `Prefer: respond-async` (and jobs
        available): 202, the request accepted as a job. Returned with the answer: the gateway's
        Completion — its facts (cache status and time, upstream time, tokens) for the pipeline
        — or None for a job's 202. A GET is never a job."""
        body = read_body(environ, self.model, limit)
        posted = environ["REQUEST_METHOD"] == "POST"
        if jobs is not None and posted and "HTTP_PREFER" in environ and wants_async(environ):
            if isinstance(jobs, JobsUnavailable):
                raise jobs.error()  # asked for a job: never answered synchronously instead
            return submit_async(jobs, self.name, body), None
        policy, who = cache_policy(environ), caller(environ)
        answer, completion = self.answer(prompts, body, policy, who)
        data = render(answer)
        status, etag = completion.cache_status, etag_of(data)
        headers = [("Content-Type", JSON_TYPE), ("Content-Length", str(len(data))), ("X-Cache", status)]
        if status == "HIT" or status == "STALE":
            headers.append(("Age", str(completion.age)))
        shareable = policy.write and who.key is None  # a key's answer is its own (app.api._edge)
        asked = (self.path, body) if posted else None  # a shareable POST answer names its GET
        headers += caching_headers(etag, completion, shareable, prompts.stale_seconds, time.time(), asked)
        return not_modified(environ, etag, headers) or (status_line(200), headers, data), completion

    def view(self) -> Response:
        """The endpoint as a Flask view (the pipeline's shortcut off: Flask routes to it)."""
        found = parts()
        jobs = found.jobs or found.jobs_unavailable
        (status, headers, data), completion = self.handle(
            request.environ, found.prompts, found.settings.max_body_bytes, jobs
        )
        exchange = current()
        if exchange is not None and completion is not None:  # Flask's path: no pipeline hand to give it to
            exchange.told(completion)
        return Response(data, status, headers)
