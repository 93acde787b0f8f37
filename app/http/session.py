"""Build the pooled session and make one JSON POST (whole, or as a stream of server-sent
events), turning transport faults into UpstreamFailure."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import requests
import sseclient
from requests.adapters import HTTPAdapter

from app.http.failure import UpstreamFailure

__all__ = ["make_session", "post_json", "post_stream"]


def make_session(pool_size: int, user_agent: str, keepalive: bool = True) -> requests.Session:
    """Return a Session that opens at most `pool_size` connections per host, all kept alive:
    more concurrent callers wait for a free one (within their deadline: the gateway bounds every
    attempt), so a burst can never open more upstream connections than configured.

    Retries are ours (the gateway's, inside the request deadline), so urllib3's are off.
    Call only after gevent has patched the process: the pool holds locks and sockets.
    """
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0, pool_block=True)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"User-Agent": user_agent, "Accept": "application/json"})
    session.trust_env = False  # no proxy or netrc lookups on the hot path
    if not keepalive:
        session.headers["Connection"] = "close"
    return session


def _retry_after(headers: Any) -> float | None:
    # Anthropic sends retry-after-ms as well as the standard retry-after (seconds).
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw:
            try:
                return max(0.0, float(raw) * scale)
            except ValueError:
                continue  # an HTTP date: fall back to our own backoff
    return None


def _send(
    session: requests.Session,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    *,
    connect_timeout: float,
    timeout: float,
    stream: bool = False,
) -> requests.Response:
    """POST `body` as JSON; return the 200 response or raise UpstreamFailure."""
    try:
        response = session.post(
            url,
            data=json.dumps(body, ensure_ascii=False).encode("utf-8"),
            headers={**headers, "Content-Type": "application/json"},
            timeout=(min(connect_timeout, timeout), timeout),
            stream=stream,
        )
    except requests.Timeout as exc:
        raise UpstreamFailure("timeout", f"upstream timed out: {type(exc).__name__}") from None
    except requests.RequestException as exc:
        raise UpstreamFailure("connection", f"upstream connection failed: {type(exc).__name__}") from None
    if response.status_code != 200:
        response.close()
        raise UpstreamFailure(
            "status",
            f"upstream answered HTTP {response.status_code}",
            status=response.status_code,
            retry_after=_retry_after(response.headers),
        )
    return response


def post_json(
    session: requests.Session,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    *,
    connect_timeout: float,
    timeout: float,
) -> dict[str, Any]:
    """POST `body` as JSON and return the decoded JSON object, or raise UpstreamFailure."""
    response = _send(session, url, body, headers, connect_timeout=connect_timeout, timeout=timeout)
    try:
        data = response.json()
    except ValueError:
        raise UpstreamFailure("invalid", "upstream answered invalid JSON") from None
    if not isinstance(data, dict):
        raise UpstreamFailure("invalid", "upstream answered JSON that is not an object")
    return data


def post_stream(
    session: requests.Session,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    *,
    connect_timeout: float,
    timeout: float,
) -> Iterator[tuple[str, str]]:
    """POST `body` and yield the answer's server-sent events as (event name, data), parsed by
    sseclient-py as they arrive; raise UpstreamFailure before or between events. `timeout` bounds
    the wait for each read; closing the generator closes the upstream connection."""
    response = _send(
        session,
        url,
        body,
        {**headers, "Accept": "text/event-stream"},
        connect_timeout=connect_timeout,
        timeout=timeout,
        stream=True,
    )
    try:
        if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
            raise UpstreamFailure("invalid", "upstream answered without an event stream")
        # chunk_size=None: each piece as soon as it arrives, never waiting to fill a buffer.
        for event in sseclient.SSEClient(response.iter_content(chunk_size=None)).events():
            yield event.event, event.data
    except requests.exceptions.ConnectionError as exc:  # urllib3 read timeouts arrive as this too
        kind = "timeout" if "timed out" in str(exc).lower() else "connection"
        raise UpstreamFailure(kind, f"upstream stream broke: {type(exc).__name__}") from None
    except requests.RequestException as exc:
        raise UpstreamFailure("connection", f"upstream stream broke: {type(exc).__name__}") from None
    finally:
        response.close()
