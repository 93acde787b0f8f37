"""Claude through the Anthropic Messages API."""

from __future__ import annotations

from typing import Any

from app.providers._http import HTTPProvider
from app.providers.base import LLMRequest, ProviderResult, UpstreamFailure

__all__ = ["AnthropicProvider"]

API_VERSION = "2023-06-01"


class AnthropicProvider(HTTPProvider):
    """POST {base_url}/v1/messages with x-api-key; text from the content blocks."""

    name = "anthropic"
    path = "/v1/messages"

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"x-api-key": api_key, "anthropic-version": API_VERSION}

    def complete(self, request: LLMRequest, timeout: float) -> ProviderResult:
        body = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "system": request.system,
            "messages": [{"role": role, "content": content} for role, content in request.messages],
        }
        return _parse(self.post(body, timeout), self.model)


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
