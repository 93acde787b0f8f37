"""A stored answer as server-sent events: replayed whole, or finishing a stream a follower
had begun; and the events that end a stream (done, or an error)."""

from __future__ import annotations

import json
import re
from typing import Any

from app.cache import CachedValue
from app.errors import APIError
from app.gateway.streams import sse_event

__all__ = ["DONE", "error_event", "refined", "replay", "replay_text", "rest"]

DONE = sse_event("done", {"status": "finished"})


def refined(text: str, mode: str, provider: str, model: str, usage: tuple[int, int]) -> dict[str, Any]:
    return {
        "refined": text,
        "status": "complete",
        "metadata": {
            "mode": mode,
            "provider": provider,
            "model": model,
            "usage": {"inputTokens": usage[0], "outputTokens": usage[1]},
        },
    }


def replay(value: CachedValue, mode: str) -> bytes:
    """A stored answer as the events a live stream of it sends: its text in pieces of about a
    line (deltas), then refined and done, in one write."""
    text, data = _stored_text(value)
    return replay_text(text, mode, data["v"], data["m"], tuple(data["u"]))


def replay_text(text: str, mode: str, provider: str, model: str, usage: tuple[int, int]) -> bytes:
    """An answer's text as the events a live stream of it sends (see `replay`)."""
    pieces = re.findall(r"[^\n]*\n|[^\n]+$", text)
    ending = [sse_event("refined", refined(text, mode, provider, model, usage)), DONE]
    return b"".join([sse_event("refined_delta", {"delta": piece}) for piece in pieces] + ending)


def rest(sent: list[bytes], value: CachedValue, mode: str) -> bytes | None:
    """The events that finish a stream of `value` whose first events were `sent` (a prefix of
    its text in refined deltas, maybe a draft stage before them); None when `sent` does not
    begin that text."""
    names: list[bytes] = []
    written: list[str] = []
    for block in b"".join(sent).split(b"\n\n"):
        name, _, data = block.removeprefix(b"event: ").partition(b"\ndata: ")
        names.append(name)
        if name == b"refined_delta":
            written.append(json.loads(data)["delta"])
    if b"refined" in names:
        return DONE
    text, stored = _stored_text(value)
    begun = "".join(written)
    if not text.startswith(begun):
        return None
    rest = [sse_event("refined_delta", {"delta": text[len(begun) :]})] if len(text) > len(begun) else []
    return b"".join(rest + _ending(text, mode, stored))


def _stored_text(value: CachedValue) -> tuple[str, dict[str, Any]]:
    """A stored answer's text (as its stream wrote it) and its stored fields."""
    data = json.loads(value.data)
    text = data["p"] if isinstance(data["p"], str) else json.dumps(data["p"], ensure_ascii=False)
    return text, data


def _ending(text: str, mode: str, data: dict[str, Any]) -> list[bytes]:
    return [sse_event("refined", refined(text, mode, data["v"], data["m"], tuple(data["u"]))), DONE]


def error_event(exc: APIError, origin: str) -> bytes:
    return sse_event("error", {"error": exc.message, "details": exc.details, "status": "failed", "requestId": origin})
