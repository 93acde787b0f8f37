"""Build the pooled session and make one JSON POST, turning transport faults into UpstreamFailure."""

from __future__ import annotations

import json
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from app.http.failure import UpstreamFailure

__all__ = ["make_session", "post_json"]


def make_session(pool_size: int, user_agent: str, keepalive: bool = True) -> requests.Session:
    """Return a Session whose pool keeps up to `pool_size` connections alive per host.

    Retries are ours (the gateway's, inside the request deadline), so urllib3's are off.
    Call only after gevent has patched the process: the pool holds locks and sockets.
    """
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
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
    try:
        response = session.post(
            url,
            data=json.dumps(body, ensure_ascii=False).encode("utf-8"),
            headers={**headers, "Content-Type": "application/json"},
            timeout=(min(connect_timeout, timeout), timeout),
        )
    except requests.Timeout as exc:
        raise UpstreamFailure("timeout", f"upstream timed out: {type(exc).__name__}") from None
    except requests.RequestException as exc:
        raise UpstreamFailure("connection", f"upstream connection failed: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise UpstreamFailure(
            "status",
            f"upstream answered HTTP {response.status_code}",
            status=response.status_code,
            retry_after=_retry_after(response.headers),
        )
    try:
        data = response.json()
    except ValueError:
        raise UpstreamFailure("invalid", "upstream answered invalid JSON") from None
    if not isinstance(data, dict):
        raise UpstreamFailure("invalid", "upstream answered JSON that is not an object")
    return data
