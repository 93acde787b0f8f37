"""Any OpenAI-compatible Chat Completions server: OpenAI, Ollama, vLLM, llama.cpp."""

from __future__ import annotations

import json
from collections.abc import Generator
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

    def _body(self, request: LLMRequest, model: str) -> dict[str, Any]:
        messages = [{"role": "system", "content": request.system}]
        messages += [{"role": role, "content": content} for role, content in request.messages]
        return {
            "model": model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "messages": messages,
        }

    def complete(self, request: LLMRequest, timeout: float) -> ProviderResult:
        return _parse(self.post(self._body(request, self.model), timeout), self.model)

    def stream(
        self, request: LLMRequest, timeout: float, model: str | None = None
    ) -> Generator[str | ProviderResult, None, None]:
        """Chat Completions chunks (choices[0].delta.content), usage in the last chunk
        (stream_options.include_usage), then `data: [DONE]`."""
        model = model or self.model
        body = {**self._body(request, model), "stream": True, "stream_options": {"include_usage": True}}
        pieces: list[str] = []
        answered_model, done = model, False
        usage: dict[str, Any] = {}
        for _name, data in self.post_events(body, timeout):
            if done:
                continue  # read to the end, so the connection goes back to the pool
            if data.strip() == "[DONE]":
                done = True
                continue
            try:
                chunk = json.loads(data)
                if "error" in chunk:
                    raise UpstreamFailure("status", "upstream stream error", status=500)
                answered_model = str(chunk.get("model") or answered_model)
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        pieces.append(text)
                        yield text
            except (ValueError, TypeError, AttributeError):
                raise UpstreamFailure("invalid", "upstream stream chunk is not a chat.completion.chunk") from None
        if not done:
            raise UpstreamFailure("connection", "upstream stream ended before [DONE]")
        text = "".join(pieces)
        if not text.strip():
            raise UpstreamFailure("invalid", "upstream answer has no text content")
        yield ProviderResult(
            text=text,
            input_tokens=int(usage.get("prompt_tokens", 0)),
            output_tokens=int(usage.get("completion_tokens", 0)),
            model=answered_model,
        )


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
