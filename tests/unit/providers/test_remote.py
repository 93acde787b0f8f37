"""The anthropic and openai providers against the fake upstream over real HTTP."""

from __future__ import annotations

import pytest

from app.http import make_session
from app.providers.anthropic import AnthropicProvider
from app.providers.base import LLMRequest, UpstreamFailure
from app.providers.openai import OpenAIProvider
from tests.support import FakeUpstreamProcess

REQUEST = LLMRequest(
    task="optimize",
    mode="code",
    system="You are terse.",
    messages=(("user", "Sort a list"),),
    max_tokens=321,
    temperature=0.5,
)


def _provider(kind: str, upstream: FakeUpstreamProcess) -> AnthropicProvider | OpenAIProvider:
    session = make_session(4, "tests")
    if kind == "anthropic":
        return AnthropicProvider(
            session, base_url=upstream.url, api_key="sk-ant-test", model="claude-test", connect_timeout=1
        )
    return OpenAIProvider(
        session, base_url=upstream.url + "/v1", api_key="sk-oai-test", model="gpt-test", connect_timeout=1
    )


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_answer_and_usage(kind: str, fake_upstream: FakeUpstreamProcess) -> None:
    result = _provider(kind, fake_upstream).complete(REQUEST, timeout=5)
    assert "Sort a list" in result.text
    assert result.input_tokens > 0 and result.output_tokens > 0
    assert result.model == ("claude-test" if kind == "anthropic" else "gpt-test")
    seen = fake_upstream.stats()["seen"][-1]
    assert seen["max_tokens"] == 321
    if kind == "anthropic":
        assert seen["path"] == "/v1/messages"
        assert (seen["api_key"], seen["anthropic_version"]) == ("sk-ant-test", "2023-06-01")
    else:
        assert seen["path"] == "/v1/chat/completions"
        assert seen["authorization"] == "Bearer sk-oai-test"


def test_keep_alive_reuses_one_connection(fake_upstream: FakeUpstreamProcess) -> None:
    provider = _provider("anthropic", fake_upstream)
    for _ in range(5):
        provider.complete(REQUEST, timeout=5)
    assert fake_upstream.stats()["connections"] == 1


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
@pytest.mark.parametrize(
    ("fault", "expected_kind", "status", "retryable"),
    [
        ({"status": 500}, "status", 500, True),
        ({"status": 529}, "status", 529, True),
        ({"status": 400}, "status", 400, False),
        ({"status": 401}, "status", 401, False),
        ({"action": "invalid_json"}, "invalid", None, False),
        ({"action": "wrong_shape"}, "invalid", None, False),
        ({"action": "empty"}, "invalid", None, False),
        ({"action": "reset"}, "connection", None, True),
        ({"action": "delay", "seconds": 2}, "timeout", None, False),
    ],
)
def test_failures(
    kind: str, fault: dict, expected_kind: str, status: int | None, retryable: bool, fake_upstream: FakeUpstreamProcess
) -> None:
    fake_upstream.control(faults=[fault])
    with pytest.raises(UpstreamFailure) as info:
        _provider(kind, fake_upstream).complete(REQUEST, timeout=0.5)
    assert info.value.kind == expected_kind
    assert info.value.status == status
    assert info.value.retryable is retryable


@pytest.mark.parametrize(("headers", "expected"), [({"retry-after": "7"}, 7.0), ({"retry-after-ms": "1500"}, 1.5)])
def test_retry_after_is_read(headers: dict, expected: float, fake_upstream: FakeUpstreamProcess) -> None:
    fake_upstream.control(faults=[{"status": 429, "headers": headers}])
    with pytest.raises(UpstreamFailure) as info:
        _provider("anthropic", fake_upstream).complete(REQUEST, timeout=5)
    assert info.value.status == 429
    assert info.value.retry_after == expected
