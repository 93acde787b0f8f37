"""The provider interface: what a request to a model is, what comes back, how an attempt fails."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

# The failure type lives with the transport that raises it (app.http); providers re-export it.
from app.http.failure import RETRYABLE_STATUSES, UpstreamFailure
from app.tenancy import ANONYMOUS, Caller

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
    caller: Caller = field(default=ANONYMOUS, compare=False)  # who asks (not part of the answer)

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


class Provider(Protocol):
    """A model API: turns an LLMRequest into text and usage, or raises UpstreamFailure."""

    name: str
    model: str

    def complete(self, request: LLMRequest, timeout: float) -> ProviderResult: ...

    def stream(
        self, request: LLMRequest, timeout: float, model: str | None = None
    ) -> Generator[str | ProviderResult, None, None]:
        """Yield the answer's text as it is written (str pieces), then one ProviderResult with the
        whole text and usage; raise UpstreamFailure before or between pieces. `model` overrides
        the configured model (the draft stage); `timeout` bounds each wait for the upstream."""
        ...

    def close(self) -> None: ...
