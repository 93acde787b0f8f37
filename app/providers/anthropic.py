"""Claude through the Anthropic Messages API."""

from __future__ import annotations

import json
from collections.abc import Generator
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

    def _body(self, request: LLMRequest, model: str) -> dict[str, Any]:
        return {
            "model": model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "system": request.system,
            "messages": [{"role": role, "content": content} for role, content in request.messages],
        }

    def complete(self, request: LLMRequest, timeout: float) -> ProviderResult:
        return _parse(self.post(self._body(request, self.model), timeout), self.model)

    def stream(
        self, request: LLMRequest, timeout: float, model: str | None = None
    ) -> Generator[str | ProviderResult, None, None]:
        """The Messages API's event stream: message_start (model, input tokens), content_block_delta
        (text), message_delta (output tokens), message_stop; ping is ignored, error fails."""
        model = model or self.model
        body = {**self._body(request, model), "stream": True}
        pieces: list[str] = []
        answered_model, input_tokens, output_tokens, stopped = model, 0, 0, False
        for name, data in self.post_events(body, timeout):
            if stopped:
                continue  # read to the end, so the connection goes back to the pool
            if name == "ping":
                continue
            event = _event(data)
            kind = event.get("type", name)
            if kind == "error":
                raise _stream_error(event.get("error") or {})
            if kind == "message_start":
                message = event.get("message") or {}
                answered_model = str(message.get("model") or model)
                input_tokens = int((message.get("usage") or {}).get("input_tokens", 0))
            elif kind == "content_block_delta":
                delta = event.get("delta") or {}
                if delta.get("type") == "text_delta" and delta.get("text"):
                    pieces.append(delta["text"])
                    yield delta["text"]
            elif kind == "message_delta":
                output_tokens = int((event.get("usage") or {}).get("output_tokens", output_tokens))
            elif kind == "message_stop":
                stopped = True
        if not stopped:
            raise UpstreamFailure("connection", "upstream stream ended before message_stop")
        text = "".join(pieces)
        if not text.strip():
            raise UpstreamFailure("invalid", "upstream answer has no text content")
        yield ProviderResult(text=text, input_tokens=input_tokens, output_tokens=output_tokens, model=answered_model)


# An error event mid-stream carries the error type the HTTP status would have had.
_ERROR_STATUS = {"overloaded_error": 529, "api_error": 500, "rate_limit_error": 429, "invalid_request_error": 400}


def _event(data: str) -> dict[str, Any]:
    try:
        event = json.loads(data)
    except ValueError:
        raise UpstreamFailure("invalid", "upstream stream event is not JSON") from None
    if not isinstance(event, dict):
        raise UpstreamFailure("invalid", "upstream stream event is not an object")
    return event


def _stream_error(error: dict[str, Any]) -> UpstreamFailure:
    kind = str(error.get("type", "api_error"))
    return UpstreamFailure("status", f"upstream stream error: {kind}", status=_ERROR_STATUS.get(kind, 500))


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
