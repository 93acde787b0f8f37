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

"""

from __future__ import annotations

import hashlib
from typing import Any

from app.gateway import Completion
from app.render import Answer, status_line

__all__ = ["REVALIDATE_WITHIN", "caching_headers", "etag_of", "not_modified"]

REVALIDATE_WITHIN = 30  # seconds past its freshness a shared cache may serve an answer while it asks again


def etag_of(data: bytes) -> str:
    """A strong entity tag: the body's digest."""
    return '"' + hashlib.blake2b(data, digest_size=16).hexdigest() + '"'


def caching_headers(
    etag: str, completion: Completion, shareable: bool, stale_seconds: int, now: float
) -> list[tuple[str, str]]:
    """`shareable`: the request allowed storing (no `no-store`) and no key made it."""
    left = int(completion.fresh_until - now)
    if not (shareable and completion.cache_status != "STALE" and left > 0):
        return [("ETag", etag), ("Cache-Control", "no-store")]
    control = f"public, max-age=0, s-maxage={left}"
    if stale_seconds > 0:
        revalidate = min(REVALIDATE_WITHIN, stale_seconds)
        control += f", stale-while-revalidate={revalidate}, stale-if-error={stale_seconds}"
    return [("ETag", etag), ("Cache-Control", control)]


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
