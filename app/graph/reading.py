"""A GraphQL request as HTTP carries it: a POST's JSON body (one request object, or a list of
them: a batch) or a GET's query parameters (`query`, `variables`, `operationName`,
`extensions`), read into `GraphRequest`s; and the error that refuses one before it runs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from graphql import GraphQLError

from app.errors import APIError

__all__ = ["GraphRequest", "RequestError", "read_requests"]


class RequestError(APIError):
    """A GraphQL request refused before it runs: a 400 (or the status given) with `code`."""

    status_code = 400
    message = "Bad GraphQL request"
    default_details = "the request is not a GraphQL request this schema answers"

    def __init__(
        self,
        message: str = "Bad GraphQL request",
        code: str = "BAD_REQUEST",
        *,
        status: int = 400,
        details: str | None = None,
        errors: list[GraphQLError] | None = None,
    ) -> None:
        super().__init__(message, details=details or (message if message != self.message else None))
        self.code, self.status_code = code, status
        self.errors = errors or []  # the document's own errors (parse, validation), each with its place


@dataclass(frozen=True, slots=True)
class GraphRequest:
    """One document of an HTTP request, as sent."""

    query: str | None
    variables: dict[str, Any]
    operation_name: str | None
    extensions: dict[str, Any]


def _object(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError(f"{name} must be a JSON object")
    return value


def _one(data: Any) -> GraphRequest:
    if not isinstance(data, dict):
        raise RequestError("a GraphQL request is a JSON object with `query` (or a list of them)")
    query, name = data.get("query"), data.get("operationName")
    if query is not None and not isinstance(query, str):
        raise RequestError("query must be a string")
    if name is not None and not isinstance(name, str):
        raise RequestError("operationName must be a string")
    return GraphRequest(
        query, _object(data.get("variables"), "variables"), name, _object(data.get("extensions"), "extensions")
    )


def read_requests(method: str, raw: bytes | None, query: str, most: int) -> tuple[list[GraphRequest], bool]:
    """The documents of a POST body (`raw`, JSON) or of a GET's query string: (them, batched)."""
    if method == "POST":
        assert raw is not None
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise RequestError("the body is not valid JSON", "BAD_REQUEST") from None
        batched = isinstance(data, list)
        items = data if batched else [data]
        if not items:
            raise RequestError("an empty batch: send at least one request")
        if len(items) > most:
            raise RequestError(
                f"{len(items)} requests in one batch: at most {most} (GRAPHQL_MAX_OPERATIONS)", "TOO_MANY_OPERATIONS"
            )
        return [_one(item) for item in items], batched
    try:
        pairs = parse_qsl(query, keep_blank_values=True, errors="strict", max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        raise RequestError("the query string is not valid: query, variables, operationName, extensions") from None
    params: dict[str, Any] = {}
    for name, value in pairs:
        if name in params:
            raise RequestError(f"{name} given twice")
        if name in ("variables", "extensions"):
            try:
                params[name] = json.loads(value) if value else None
            except (ValueError, RecursionError):
                raise RequestError(f"{name} is not valid JSON") from None
        elif name in ("query", "operationName"):
            params[name] = value or None
    return [_one(params)], False
