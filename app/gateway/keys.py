"""Cache keys: a SHA-256 of the canonical JSON of everything that shapes an answer."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

__all__ = ["HASHES", "canonical_json", "request_key"]


def _blake2b_128(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _xxh3_128(data: bytes) -> str:
    import xxhash  # optional: only the benchmark compares it

    return xxhash.xxh3_128_hexdigest(data)


# Candidates measured by `make bench` (figures: docs/performance.md, "Figures behind choices in
# the code"). SHA-256 is the one used: the fastest of the
# collision-resistant candidates here, and collision resistance matters because the cache is
# shared between callers: with a non-cryptographic hash such as xxh3 a caller could craft a
# prompt whose key collides with another caller's and poison that answer.
HASHES: dict[str, Callable[[bytes], str]] = {
    "blake2b-128": _blake2b_128,
    "sha256": _sha256,
    "xxh3-128": _xxh3_128,
}


def canonical_json(value: Any) -> bytes:
    """Serialize with sorted keys and no whitespace: equal content gives equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def request_key(namespace: str, shape: dict[str, Any], digest: Callable[[bytes], str] = _sha256) -> str:
    """Return `namespace:hash` for the full, untruncated description of a request."""
    return f"{namespace}:{digest(canonical_json(shape))}"
