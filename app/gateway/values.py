"""An answer as the service sees it (Completion), and its one stored encoding."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from app.cache import CachedValue

__all__ = ["Completion", "completion_of", "encode"]


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


def encode(payload: Any, provider: str, model: str, usage: tuple[int, int]) -> bytes:
    return json.dumps(
        {"p": payload, "v": provider, "m": model, "u": usage}, ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")


def completion_of(value: CachedValue, status: str, now: float) -> Completion:
    data = json.loads(value.data)
    return Completion(
        payload=data["p"],
        provider=data["v"],
        model=data["m"],
        input_tokens=data["u"][0],
        output_tokens=data["u"][1],
        cache_status=status,
        age=max(0, int(now - value.stored_at)),
    )
