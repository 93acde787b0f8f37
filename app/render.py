"""The bytes of every JSON answer, success or error: one encoder, one place."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

__all__ = ["JSON_TYPE", "Answer", "json_parts", "render", "status_line"]

JSON_TYPE = "application/json"
Answer = tuple[str, list[tuple[str, str]], bytes]  # WSGI parts: status line, headers, body
# What jsonify writes with this app's settings (compact, key order kept, UTF-8, a final newline),
# without its provider lookups and keyword plumbing.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}


def render(body: dict[str, Any] | list[Any]) -> bytes:
    """Return the bytes of a JSON answer (an object; a list for a GraphQL batch)."""
    return (_encode(body) + "\n").encode("utf-8")


def status_line(status: int) -> str:
    """`200 OK`, as WSGI's start_response takes it."""
    return _LINES.get(status) or f"{status} Unknown"


def json_parts(status: int, body: dict[str, Any] | list[Any], headers: list[tuple[str, str]] | None = None) -> Answer:
    """A JSON answer as WSGI parts: status line, headers (Content-Type and -Length first), body."""
    data = render(body)
    return (
        status_line(status),
        [("Content-Type", JSON_TYPE), ("Content-Length", str(len(data))), *(headers or ())],
        data,
    )
