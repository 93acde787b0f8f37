"""Cache keys: distinct requests never share one; key order never matters; no truncation."""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from app.gateway.keys import HASHES, canonical_json, request_key
from app.providers.base import LLMRequest

text = st.text(max_size=300)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=20,
)
requests_ = st.builds(
    LLMRequest,
    task=st.sampled_from(["optimize", "questions", "scene"]),
    mode=st.sampled_from(["code", "video", "reasoning"]),
    system=text,
    messages=st.lists(st.tuples(st.sampled_from(["user", "assistant"]), text), min_size=1, max_size=3).map(tuple),
    max_tokens=st.integers(1, 8192),
    temperature=st.floats(0, 1),
    inputs=st.dictionaries(text, text, max_size=3),
)


def _key(request: LLMRequest, provider: str = "anthropic", model: str = "m") -> str:
    return request_key(request.task, {"provider": provider, "model": model, **request.identity()})


@settings(max_examples=150)
@given(requests_, requests_)
def test_distinct_requests_never_share_a_key(a: LLMRequest, b: LLMRequest) -> None:
    assert (_key(a) == _key(b)) == (a.identity() == b.identity())


@settings(max_examples=200)
@given(requests_)
def test_provider_and_model_are_part_of_the_key(request: LLMRequest) -> None:
    keys = {_key(request), _key(request, provider="openai"), _key(request, model="m2")}
    assert len(keys) == 3


@settings(max_examples=100)
@given(st.dictionaries(text, json_values, max_size=8), st.randoms())
def test_key_ignores_json_key_order(shape: dict, random: object) -> None:
    items = list(shape.items())
    random.shuffle(items)  # type: ignore[attr-defined]
    reordered = dict(items)
    assert canonical_json(shape) == canonical_json(reordered)
    assert request_key("ns", shape) == request_key("ns", reordered)
    assert json.loads(canonical_json(shape)) == shape


@settings(max_examples=100)
@given(st.text(min_size=1, max_size=50), st.text(min_size=1, max_size=50), st.integers(500, 20_000))
def test_long_common_prefix_still_differs(tail_a: str, tail_b: str, prefix_length: int) -> None:
    prefix = "p" * prefix_length
    a = LLMRequest("optimize", "code", "system", (("user", prefix + tail_a),), 100)
    b = LLMRequest("optimize", "code", "system", (("user", prefix + tail_b),), 100)
    assert (_key(a) == _key(b)) == (tail_a == tail_b)


def test_key_is_namespaced_and_at_least_128_bits() -> None:
    key = request_key("questions", {"x": 1})
    namespace, digest = key.split(":")
    assert namespace == "questions"
    assert re.fullmatch(r"[0-9a-f]{64}", digest)  # SHA-256: 256 bits, lower-case hex


def test_hash_candidates_agree_on_equality() -> None:
    for digest in HASHES.values():
        assert digest(b"a") == digest(b"a") != digest(b"b")
