"""PromptService: turns validated requests into model requests and shapes each endpoint's answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from app.gateway import Completion, Gateway, LLMRequest, Stream
from app.schemas import OptimizeRequest
from app.services.answers import json_answer, text_answer
from app.services.modes import MODE_REGISTRY, context_appendix
from app.services.tasks import TASKS
from app.tenancy import ANONYMOUS, Caller

__all__ = ["CachePolicy", "PromptService"]


@dataclass(frozen=True)
class CachePolicy:
    """What the caller's Cache-Control allows: read the cache, and store (and share) the answer."""

    read: bool = True
    write: bool = True
    upstream: bool = True  # False: a fresh cached answer or NotCached, never a model call
    peek: bool = False  # True: an answer fresh in this worker's memory, else NotCached, nothing counted


def _meta(completion: Completion) -> dict[str, Any]:
    return {
        "provider": completion.provider,
        "model": completion.model,
        "usage": {"inputTokens": completion.input_tokens, "outputTokens": completion.output_tokens},
    }


def _optimized(request: LLMRequest, completion: Completion) -> dict[str, Any]:
    return {"optimizedPrompt": completion.payload, "mode": request.mode, **_meta(completion)}


class PromptService:
    """One method per endpoint; each builds an LLMRequest and shapes the answer."""

    def __init__(
        self,
        gateway: Gateway,
        timeout: float | None = None,
        default_ttl: int = 3600,
        draft_model: str = "",
        stale_seconds: int = 0,
    ) -> None:
        self.gateway = gateway
        self.stale_seconds = stale_seconds  # how long past its freshness an answer may stand in for a failure
        self._draft_model = draft_model or None
        self._timeout = timeout  # when set, replaces every mode's own deadline
        self._default_ttl = default_ttl
        self._parsers = {name: json_answer(task.answer) for name, task in TASKS.items()}

    def readiness(self) -> dict[str, dict[str, object]]:
        """The gateway's readiness checks (provider, breaker, Redis)."""
        return self.gateway.core.readiness()

    @property
    def breaker_state(self) -> str:
        return self.gateway.core.breaker_state

    @staticmethod
    def label_values() -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Return (cache namespaces, modes) this service's requests carry, for metric labels."""
        return ("optimize", *TASKS), (*MODE_REGISTRY, *TASKS)

    def optimize(
        self, body: OptimizeRequest, policy: CachePolicy, caller: Caller = ANONYMOUS
    ) -> tuple[dict[str, Any], Completion]:
        """Return the optimized prompt for the body's prompt, mode and context."""
        request = self._optimize_request(body, caller)
        completion = self.gateway.complete(
            request,
            text_answer,
            read=policy.read,
            write=policy.write,
            cached_only=not policy.upstream,
            peek=policy.peek,
        )
        return _optimized(request, completion), completion

    def optimize_stream(
        self, body: OptimizeRequest, policy: CachePolicy, request_id: str, caller: Caller = ANONYMOUS
    ) -> Stream:
        """The same answer as `optimize`, as server-sent events (same key, same cache)."""
        request = self._optimize_request(body, caller)
        return self.gateway.stream(
            request,
            text_answer,
            read=policy.read,
            write=policy.write,
            draft_model=self._draft_model,
            origin=request_id,
        )

    def optimize_streamed(
        self, body: OptimizeRequest, origin: str, caller: Caller = ANONYMOUS
    ) -> tuple[dict[str, Any], Completion]:
        """`optimize`'s answer, made as `optimize_stream` makes it: followers can `join` it live."""
        request = self._optimize_request(body, caller)
        completion = self.gateway.complete_streamed(request, text_answer, draft_model=self._draft_model, origin=origin)
        return _optimized(request, completion), completion

    def join_optimize_stream(self, body: OptimizeRequest, origin: str, caller: Caller = ANONYMOUS) -> Stream | None:
        """The events of `optimize_stream` for this body when one is in flight; None otherwise."""
        return self.gateway.join(self._optimize_request(body, caller), text_answer, origin=origin)

    def _optimize_request(self, body: OptimizeRequest, caller: Caller) -> LLMRequest:
        mode = MODE_REGISTRY[body.mode]
        context = body.context.model_dump() if body.context else None
        request = LLMRequest(
            task="optimize",
            mode=mode.name,
            system=mode.system,
            messages=(("user", f"<prompt>\n{body.prompt}\n</prompt>{context_appendix(context)}"),),
            max_tokens=mode.max_tokens,
            timeout=self._timeout or mode.timeout,
            ttl=mode.ttl or self._default_ttl,
            inputs={
                "prompt": body.prompt,
                "context": context,
                "sections": list(mode.sections),
                "drafts": list(mode.drafts),
                "context_at": mode.context_at,
            },
            caller=caller,
        )
        return request

    def answer(
        self, task_name: str, body: BaseModel, policy: CachePolicy, caller: Caller = ANONYMOUS
    ) -> tuple[dict[str, Any], Completion]:
        """Return the JSON answer of one of the other endpoints (questions, suggestions, scene)."""
        task = TASKS[task_name]
        inputs = body.model_dump()
        request = LLMRequest(
            task=task.name,
            mode=task.name,
            system=task.system,
            messages=(("user", task.render(inputs)),),
            max_tokens=task.max_tokens,
            temperature=task.temperature,
            timeout=self._timeout or task.timeout,
            ttl=task.ttl or self._default_ttl,
            inputs=inputs,
            caller=caller,
        )
        completion = self.gateway.complete(
            request,
            self._parsers[task_name],
            read=policy.read,
            write=policy.write,
            cached_only=not policy.upstream,
            peek=policy.peek,
        )
        extra = {"isPlaceholder": False} if task_name == "enhancement" else {}
        return {**completion.payload, **extra, **_meta(completion)}, completion
