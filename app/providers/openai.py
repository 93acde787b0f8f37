"""Any OpenAI-compatible Chat Completions server: OpenAI, Ollama, vLLM, llama.cpp."""

from __future__ import annotations

from typing import Any

from app.providers._http import HTTPProvider
from app.providers.base import LLMRequest, ProviderResult, UpstreamFailure

__all__ = ["OpenAIProvider"]


class OpenAIProvider(HTTPProvider):
    """POST {base_url}/chat/completions; the system prompt goes first as a system message."""

    name = "openai"
    path = "/chat/completions"

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def complete(self, request: LLMRequest, timeout: float) -> ProviderResult:
        messages = [{"role": "system", "content": request.system}]
        messages += [{"role": role, "content": content} for role, content in request.messages]
        body = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "messages": messages,
        }
        return _parse(self.post(body, timeout), self.model)


def _parse(data: dict[str, Any], model: str) -> ProviderResult:
    try:
        text = data["choices"][0]["message"]["content"]
        usage = data.get("usage") or {}
        result = ProviderResult(
            text=str(text or ""),
            input_tokens=int(usage.get("prompt_tokens", 0)),
            output_tokens=int(usage.get("completion_tokens", 0)),
            model=str(data.get("model") or model),
        )
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        raise UpstreamFailure("invalid", "upstream answer is not a Chat Completions response") from None
    if not result.text.strip():
        raise UpstreamFailure("invalid", "upstream answer has no text content")
    return result
