"""Outbound HTTP: the pooled session's settings, and how post_json turns every transport outcome
into a JSON object or one UpstreamFailure (real HTTP against the fake upstream)."""

from __future__ import annotations

import pytest

from app.http import RETRYABLE_STATUSES, UpstreamFailure, make_session, post_json
from app.http.session import _retry_after
from tests.support import FakeUpstreamProcess, free_port

BODY = {"model": "claude-test", "max_tokens": 10, "system": "s", "messages": [{"role": "user", "content": "hi"}]}


def _post(url: str, timeout: float = 5) -> dict:
    with make_session(pool_size=4, user_agent="test/1") as session:
        return post_json(session, url, BODY, {"x-api-key": "k"}, connect_timeout=1, timeout=timeout)


def test_pool_size_and_user_agent() -> None:
    session = make_session(pool_size=7, user_agent="prompt-builder/test")
    adapter = session.get_adapter("https://example.com")
    assert adapter._pool_maxsize == 7  # type: ignore[attr-defined]
    assert session.headers["User-Agent"] == "prompt-builder/test"


def test_a_200_json_object_is_returned(fake_upstream: FakeUpstreamProcess) -> None:
    data = _post(fake_upstream.url + "/v1/messages")
    assert data["type"] == "message" and data["content"][0]["type"] == "text"


@pytest.mark.parametrize(
    ("fault", "kind", "status"),
    [
        ({"status": 529, "headers": {"retry-after": "3"}}, "status", 529),
        ({"status": 400}, "status", 400),
        ({"action": "invalid_json"}, "invalid", None),
        ({"action": "reset"}, "connection", None),
    ],
)
def test_failures_become_one_upstream_failure(
    fake_upstream: FakeUpstreamProcess, fault: dict, kind: str, status: int | None
) -> None:
    fake_upstream.control(faults=[fault])
    with pytest.raises(UpstreamFailure) as info:
        _post(fake_upstream.url + "/v1/messages")
    assert (info.value.kind, info.value.status) == (kind, status)
    assert info.value.retryable == (kind == "connection" or status in RETRYABLE_STATUSES)
    if status == 529:
        assert info.value.retry_after == 3.0


def test_a_slow_answer_is_a_timeout(fake_upstream: FakeUpstreamProcess) -> None:
    fake_upstream.control(faults=[{"action": "delay", "seconds": 2}])
    with pytest.raises(UpstreamFailure) as info:
        _post(fake_upstream.url + "/v1/messages", timeout=0.3)
    assert info.value.kind == "timeout" and info.value.counts_against_upstream


def test_nobody_listening_is_a_connection_failure() -> None:
    with pytest.raises(UpstreamFailure) as info:
        _post(f"http://127.0.0.1:{free_port()}/v1/messages")
    assert info.value.kind == "connection" and info.value.retryable


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({"retry-after": "-5"}, 0.0),
        ({}, None),
    ],
)
def test_retry_after_headers(headers: dict[str, str], expected: float | None) -> None:
    assert _retry_after(headers) == expected
