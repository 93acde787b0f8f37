"""GET /api/answers/{tag}: a shareable answer by its content (the CDN's door, app.api._edge).
The URL names the answer's exact bytes — its ETag — so it is immutable: a CDN may keep it as
long as it says, and `If-None-Match` gets 304. 404 once the answer is no longer held."""

from __future__ import annotations

import re
import time

from flask import Blueprint, Response, request

from app.api._edge import find, not_modified
from app.errors import APIError
from app.parts import parts
from app.render import JSON_TYPE, status_line

__all__ = ["AnswerNotFoundError", "bp"]

bp = Blueprint("answers", __name__)
_TAG = re.compile(r"[0-9a-f]{32}")


class AnswerNotFoundError(APIError):
    status_code = 404
    message = "Answer not found"
    default_details = "no answer with this tag is held (it expired, or never was shareable); send its request again"


@bp.get("/api/answers/<tag>")
def answer(tag: str) -> Response:
    value = find(parts().prompts.gateway.core, tag) if _TAG.fullmatch(tag) else None
    if value is None:
        raise AnswerNotFoundError()
    etag = f'"{tag}"'
    left = max(0, int(value.fresh_until - time.time()))
    headers = [
        ("Content-Type", JSON_TYPE),
        ("Content-Length", str(len(value.data))),
        ("ETag", etag),
        ("Cache-Control", f"public, max-age={left}, immutable"),
    ]
    found = not_modified(request.environ, etag, headers)
    status, headers, data = found or (status_line(200), headers, value.data)
    return Response(data, status, headers)
