"""HTTP caching semantics of a JSON answer (RFC 9111), so a shared cache in front — nginx's
edge tier (config/nginx.conf), a CDN — can act correctly.

An answer that may be shared says so with `Cache-Control: public, max-age=0, s-maxage=<its
remaining freshness>, stale-while-revalidate=<min(30, STALE_IF_ERROR_SECONDS)>,
stale-if-error=<STALE_IF_ERROR_SECONDS>`: shared caches keep it as long as this service's own
cache does, may serve it a few seconds past that while they ask again, and may stand it in for
a failure as long as this service would — bounds a shared cache reads from each answer (nginx
does) rather than its own unbounded settings; a browser keeps nothing without asking again.
Every other answer is `no-store`: a stale replay, an answer to a `no-store` request, an error
(the pipeline's default), an authenticated caller's (the pipeline replaces it: a key's answer
is never shared). A strong `ETag` names the body's
bytes; `If-None-Match` naming it gets `304` with no body — a hit costs no model call, and a
shared cache revalidates an expired entry without the body crossing again.

The CDN's door: CDNs do not cache POST. Each operation also answers `GET /api/<operation>?body=
<the JSON body, URL-encoded>` — the same request through the same pipeline, addressed by its
URL — and a shareable POST answer names that URL in `Content-Location` (the request's body in a
canonical spelling, when the URL fits in `DOOR_LIMIT`), so a client that fetches it next time
is answered by the CDN in front. Nothing is stored twice: the GET is the request, not a copy.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel

from app.gateway import Completion
from app.render import Answer, status_line

__all__ = ["DOOR_LIMIT", "DOOR_PARAMETER", "REVALIDATE_WITHIN", "caching_headers", "door", "etag_of", "not_modified"]

REVALIDATE_WITHIN = 30  # seconds past its freshness a shared cache may serve an answer while it asks again
DOOR_PARAMETER = "body"
# Characters of a door named in Content-Location: a response header every proxy on the way must
# hold in its header buffer (nginx's proxy_buffer_size is one 4 KB page by default: a longer
# header is its 502). A GET may be longer — up to gunicorn's request line (limit_request_line
# 8190, config/gunicorn.conf.py), as nginx's (8 KB) and CloudFront's URL (8,192) allow — but the
# service names a door only this short.
DOOR_LIMIT = 2048


def etag_of(data: bytes) -> str:
    """A strong entity tag: the body's digest."""
    return '"' + hashlib.blake2b(data, digest_size=16).hexdigest() + '"'


def caching_headers(
    etag: str,
    completion: Completion,
    shareable: bool,
    stale_seconds: int,
    now: float,
    asked: tuple[str, BaseModel] | None = None,
) -> list[tuple[str, str]]:
    """`shareable`: the request allowed storing (no `no-store`) and no key made it. `asked`: a
    POST's path and body, whose door (its GET) a shared answer names in Content-Location."""
    left = int(completion.fresh_until - now)
    if not (shareable and completion.cache_status != "STALE" and left > 0):
        return [("ETag", etag), ("Cache-Control", "no-store")]
    control = f"public, max-age=0, s-maxage={left}"
    if stale_seconds > 0:
        revalidate = min(REVALIDATE_WITHIN, stale_seconds)
        control += f", stale-while-revalidate={revalidate}, stale-if-error={stale_seconds}"
    headers = [("ETag", etag), ("Cache-Control", control)]
    url = door(*asked) if asked is not None else None
    if url is not None:
        headers.append(("Content-Location", url))
    return headers


def door(path: str, body: BaseModel) -> str | None:
    """The GET that asks what this POST asked: the body as the service read it (aliases, only
    the fields the caller set), compact JSON, URL-encoded; None when the URL would not fit."""
    return _door_of(path, body.model_dump_json(by_alias=True, exclude_unset=True))


@functools.lru_cache(maxsize=1024)  # the requests asked again and again; at most ~4 MB (key + URL)
def _door_of(path: str, data: str) -> str | None:
    """Percent-encoding is the cost (~18 us for a short prompt, pure Python): once per request."""
    if len(path) + len(DOOR_PARAMETER) + 2 + len(data) > DOOR_LIMIT:
        return None  # encoded, it is at least as long
    url = f"{path}?{DOOR_PARAMETER}={quote(data, safe='')}"
    return url if len(url) <= DOOR_LIMIT else None


def not_modified(environ: dict[str, Any], etag: str, headers: list[tuple[str, str]]) -> Answer | None:
    """304 when the request's If-None-Match names `etag` (or is `*`), else None. If-None-Match
    compares weakly (RFC 9110 13.1.2): `W/"x"` matches `"x"` (a gzipping proxy weakens tags)."""
    condition = environ.get("HTTP_IF_NONE_MATCH")
    if not condition:
        return None
    tags = {tag.strip().removeprefix("W/") for tag in condition.split(",")}
    if "*" in tags or etag in tags:
        return status_line(304), [(k, v) for k, v in headers if k.lower() not in _NO_BODY], b""
    return None


_NO_BODY = frozenset({"content-type", "content-length"})
