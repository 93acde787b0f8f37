"""What the HTTP providers share: a pooled session, a URL, headers, and one JSON POST per attempt."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import requests

from app.http import post_json, post_stream

__all__ = ["HTTPProvider"]


class HTTPProvider:
    """Base of the remote providers; subclasses build the body and parse the answer."""

    name = ""
    path = ""

    def __init__(
        self,
        session: requests.Session,
        *,
        base_url: str,
        api_key: str,
        model: str,
        connect_timeout: float,
    ) -> None:
        self._session = session
        self._url = f"{base_url}{self.path}"
        self._headers = self.auth_headers(api_key)
        self._connect_timeout = connect_timeout
        self.model = model

    def auth_headers(self, api_key: str) -> dict[str, str]:
        raise NotImplementedError

    def post(self, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        """POST one attempt and return the decoded JSON object (or raise UpstreamFailure)."""
        return post_json(
            self._session, self._url, body, self._headers, connect_timeout=self._connect_timeout, timeout=timeout
        )

    def post_events(self, body: dict[str, Any], timeout: float) -> Iterator[tuple[str, str]]:
        """POST one streaming attempt; yield its server-sent events as (event, data)."""
        return post_stream(
            self._session, self._url, body, self._headers, connect_timeout=self._connect_timeout, timeout=timeout
        )

    def close(self) -> None:
        self._session.close()
