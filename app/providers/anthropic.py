"""Claude through the Anthropic Messages API."""

from __future__ import annotations

from typing import Any

import requests

from app.http import post_json
from app.providers.base import LLMRequest, ProviderResult, UpstreamFailure

__all__ = ["AnthropicProvider"]

API_VERSION = "2023-06-01"


class AnthropicProvider:
    """POST {base_url}/v1/messages with x-api-key; text from the content blocks."""

    name = "anthropic"

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
        self._url = f"{base_url}/v1/messages"
        self._headers = {"x-api-key": api_key, "anthropic-version": API_VERSION}
        self._connect_timeout = connect_timeout
        self.model = model

    def complete(self, request: LLMRequest, timeout: float) -> ProviderResult:
        body = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "system": request.system,
            "messages": [{"role": role, "content": content} for role, content in request.messages],
        }
        data = post_json(
            self._session,
            self._url,
            body,
            self._headers,
            connect_timeout=self._connect_timeout,
            timeout=timeout,
        )
        return _parse(data, self.model)

    def close(self) -> None:
        self._session.close()


def _parse(data: dict[str, Any], model: str) -> ProviderResult:
    try:
        blocks = data["content"]
        text = "".join(b["text"] for b in blocks if b.get("type") == "text")
        usage = data["usage"]
        result = ProviderResult(
            text=text,
            input_tokens=int(usage["input_tokens"]),
            output_tokens=int(usage["output_tokens"]),
            model=str(data.get("model") or model),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UpstreamFailure("invalid", "upstream answer is not a Messages API response") from None
    if not result.text.strip():
        raise UpstreamFailure("invalid", "upstream answer has no text content")
    return result
