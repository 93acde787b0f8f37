"""The provider interface: what a request to a model is, what comes back, how an attempt fails."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["RETRYABLE_STATUSES", "LLMRequest", "Provider", "ProviderResult", "UpstreamFailure"]


@dataclass(frozen=True)
class LLMRequest:
    """Everything that shapes one model answer, plus how long we may wait for it."""

    task: str  # endpoint namespace: optimize, questions, enhancement, custom, scene, creative
    mode: str  # optimization mode, or the task name for the other endpoints
    system: str
    messages: tuple[tuple[str, str], ...]  # (role, content)
    max_tokens: int
    temperature: float = 0.7
    timeout: float = 30.0
    ttl: int = 3600
    inputs: dict[str, Any] = field(default_factory=dict)  # validated fields, for offline answers

    def identity(self) -> dict[str, Any]:
        """Return every field that shapes the answer (timeout and ttl do not)."""
        return {
            "task": self.task,
            "mode": self.mode,
            "system": self.system,
            "messages": [list(m) for m in self.messages],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "inputs": self.inputs,
        }


@dataclass(frozen=True)
class ProviderResult:
    text: str
    input_tokens: int
    output_tokens: int
    model: str


# Upstream answers worth another attempt: rate limited, server errors, Anthropic's "overloaded".
RETRYABLE_STATUSES = (429, 500, 502, 503, 529)


class UpstreamFailure(Exception):
    """One failed attempt at the upstream; the gateway decides on retries and the HTTP status."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind  # timeout | connection | status | invalid
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind == "connection" or self.status in RETRYABLE_STATUSES

    @property
    def counts_against_upstream(self) -> bool:
        """Return whether this failure says the upstream is unhealthy (a breaker failure)."""
        if self.kind in ("timeout", "connection"):
            return True
        return self.status is not None and (self.status == 429 or self.status >= 500)


class Provider(Protocol):
    """A model API: turns an LLMRequest into text and usage, or raises UpstreamFailure."""

    name: str
    model: str

    def complete(self, request: LLMRequest, timeout: float) -> ProviderResult: ...

    def close(self) -> None: ...
