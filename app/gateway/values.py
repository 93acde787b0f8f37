"""An answer as the service sees it (Completion), and its one stored encoding."""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from typing import Any

from app.cache import CachedValue
from app.providers.base import ProviderResult

__all__ = ["Completion", "answer_value", "completion_of", "encode"]


@dataclass(frozen=True)
class Completion:
    """An answer as the service sees it: parsed payload, who made it, and where it came from."""

    payload: Any
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_status: str  # HIT | MISS | COALESCED | STALE
    age: int  # seconds since the upstream produced it
    cache_seconds: float | None = None  # how long the cache lookup took (None: no lookup)
    upstream_seconds: float = 0.0  # how long the caller waited for the upstream (or a call in flight)
    fresh_until: float = 0.0  # epoch seconds the answer stays fresh (0: unknown)
    key: str = ""  # its cache key (namespace:digest): equal keys, one answer
    mode: str = ""  # the request's mode (the task's name outside optimize)

    @property
    def spent(self) -> tuple[int, int]:
        """Tokens this caller's own call spent (input, output): a hit, a coalesced or a stale
        answer spent none."""
        return (self.input_tokens, self.output_tokens) if self.cache_status == "MISS" else (0, 0)


def answer_value(payload: Any, provider: str, result: ProviderResult, ttl: float) -> CachedValue:
    """The one place an answer the model just made becomes a cached value: `payload` parsed from
    `result`'s text, fresh for `ttl` seconds from now."""
    now = time.time()
    usage = (result.input_tokens, result.output_tokens)
    return CachedValue(encode(payload, provider, result.model, usage), stored_at=now, fresh_until=now + ttl)


def encode(payload: Any, provider: str, model: str, usage: tuple[int, int]) -> bytes:
    return json.dumps(
        {"p": payload, "v": provider, "m": model, "u": usage}, ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")


@functools.lru_cache(maxsize=256)
def _decoded(data: bytes) -> tuple[Any, str, str, int, int]:
    """A stored answer's fields, decoded once for the answers asked most (a hit decodes the same
    bytes object again and again: its hash is kept by the object, so a repeat costs a lookup).
    The payload is shared between callers: nothing may change it."""
    fields = json.loads(data)
    return fields["p"], fields["v"], fields["m"], fields["u"][0], fields["u"][1]


def completion_of(
    value: CachedValue,
    status: str,
    now: float,
    cache_seconds: float | None = None,
    upstream_seconds: float = 0.0,
    asked: tuple[str, str] = ("", ""),
) -> Completion:
    """`asked`: the request's cache key and mode (the access line's, for traces)."""
    payload, provider, model, input_tokens, output_tokens = _decoded(value.data)
    return Completion(
        payload=payload,
        provider=provider,
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_status=status,
        age=max(0, int(now - value.stored_at)),
        cache_seconds=cache_seconds,
        upstream_seconds=upstream_seconds,
        fresh_until=value.fresh_until,
        key=asked[0],
        mode=asked[1],
    )
