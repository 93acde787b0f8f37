"""Cache keys: a 128-bit hash of the canonical JSON of everything that shapes an answer."""

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


# Candidates measured by `make bench`. BLAKE2b-128 is the one used: within a few microseconds of
# xxh3 for realistic request sizes (the canonical JSON dump costs more than either), and unlike
# xxh3 it is collision-resistant, which matters because the cache is shared between callers:
# with a non-cryptographic hash a caller could craft a prompt whose key collides with another's.
HASHES: dict[str, Callable[[bytes], str]] = {
    "blake2b-128": _blake2b_128,
    "sha256": _sha256,
    "xxh3-128": _xxh3_128,
}


def canonical_json(value: Any) -> bytes:
    """Serialize with sorted keys and no whitespace: equal content gives equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def request_key(namespace: str, shape: dict[str, Any], digest: Callable[[bytes], str] = _blake2b_128) -> str:
    """Return `namespace:hash` for the full, untruncated description of a request."""
    return f"{namespace}:{digest(canonical_json(shape))}"
