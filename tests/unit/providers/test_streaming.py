"""Streaming providers against the fake upstream over real HTTP: the fake's events are what the
official SDKs accept (their own stream event types), and the providers turn them into text pieces
whose concatenation is the answer, with usage; faults mid-stream become UpstreamFailure."""

from __future__ import annotations

import json
import time

import pytest
import requests
import sseclient
from anthropic.types import RawMessageStreamEvent
from openai.types.chat import ChatCompletionChunk
from pydantic import TypeAdapter

from app.providers.base import ProviderResult, UpstreamFailure
from app.providers.template import TemplateProvider
from tests.support import FakeUpstreamProcess
from tests.unit.providers.test_remote import REQUEST, _provider

ANTHROPIC_EVENT = TypeAdapter(RawMessageStreamEvent)


def _raw_events(upstream: FakeUpstreamProcess, kind: str) -> list[tuple[str, str]]:
    path, body = ("/v1/messages", {"system": "s"}) if kind == "anthropic" else ("/v1/chat/completions", {})
    body |= {
        "model": "m",
        "max_tokens": 10,
        "stream": True,
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hello there"}],
    }
    if kind == "anthropic":
        body["messages"] = body["messages"][1:]
    response = requests.post(upstream.url + path, json=body, stream=True, timeout=10)
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return [(e.event, e.data) for e in sseclient.SSEClient(response.iter_content(chunk_size=None)).events()]


def test_fake_anthropic_stream_is_what_the_sdk_parses(fake_upstream: FakeUpstreamProcess) -> None:
    events = _raw_events(fake_upstream, "anthropic")
    parsed = [ANTHROPIC_EVENT.validate_python(json.loads(data)) for name, data in events if name != "ping"]
    types = [event.type for event in parsed]
    assert types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"]
    assert types.count("content_block_delta") == 8  # stream_chunks
    assert [name for name, _ in events if name == "ping"] == ["ping"]


def test_fake_openai_stream_is_what_the_sdk_parses(fake_upstream: FakeUpstreamProcess) -> None:
    events = _raw_events(fake_upstream, "openai")
    assert events[-1][1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(data) for _, data in events[:-1]]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 8


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_pieces_join_to_the_answer_with_usage(kind: str, fake_upstream: FakeUpstreamProcess) -> None:
    fake_upstream.control(stream_chunks=5)
    items = list(_provider(kind, fake_upstream).stream(REQUEST, timeout=5))
    *pieces, result = items
    assert isinstance(result, ProviderResult) and all(isinstance(p, str) for p in pieces)
    assert len(pieces) == 5 and "".join(pieces) == result.text and "Sort a list" in result.text
    tokens = fake_upstream.stats()["tokens"]
    assert (result.input_tokens, result.output_tokens) == (tokens["input"], tokens["output"])
    assert result.model == ("claude-test" if kind == "anthropic" else "gpt-test")


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_a_draft_model_is_sent_upstream(kind: str, fake_upstream: FakeUpstreamProcess) -> None:
    *_, result = _provider(kind, fake_upstream).stream(REQUEST, timeout=5, model="fast-draft")
    assert result.model == "fast-draft" and fake_upstream.stats()["seen"][-1]["model"] == "fast-draft"


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
@pytest.mark.parametrize(
    ("fault", "failure_kind", "status"),
    [
        ({"action": "stream_error", "after": 2}, "status", None),
        ({"action": "stream_reset", "after": 2}, "connection", None),
        ({"status": 529}, "status", 529),
    ],
)
def test_faults_become_upstream_failures(
    kind: str, fault: dict, failure_kind: str, status: int | None, fake_upstream: FakeUpstreamProcess
) -> None:
    fake_upstream.control(faults=[fault])
    got: list[str] = []
    with pytest.raises(UpstreamFailure) as info:
        for item in _provider(kind, fake_upstream).stream(REQUEST, timeout=5):
            got.append(item)  # type: ignore[arg-type]
    assert info.value.kind == failure_kind
    if status:
        assert info.value.status == status and got == []  # failed before the first piece
    else:
        assert len(got) == 2 and info.value.counts_against_upstream  # two pieces, then the fault
    if fault.get("action") == "stream_error":
        assert info.value.status == (529 if kind == "anthropic" else 500)


def test_a_stall_longer_than_the_read_timeout_fails(fake_upstream: FakeUpstreamProcess) -> None:
    fake_upstream.control(faults=[{"action": "stream_stall", "after": 1, "seconds": 5}])
    started = time.monotonic()
    with pytest.raises(UpstreamFailure) as info:
        list(_provider("anthropic", fake_upstream).stream(REQUEST, timeout=0.5))
    assert info.value.kind == "timeout" and time.monotonic() - started < 4.5


def test_closing_the_stream_closes_the_upstream(fake_upstream: FakeUpstreamProcess) -> None:
    fake_upstream.control(stream_chunks=50, stream_interval=0.02)
    stream = _provider("anthropic", fake_upstream).stream(REQUEST, timeout=5)
    next(stream)
    stream.close()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while fake_upstream.stats()["streams"]["aborted"] < 1:
        assert time.monotonic() < deadline, "the fake never saw the stream closed"
        time.sleep(0.02)
    assert fake_upstream.stats()["streams"]["completed"] == 0


def test_template_streams_its_offline_answer_in_pieces() -> None:
    from tests.unit.providers.test_template import _request

    request = _request(
        "optimize", {"prompt": "explain vaccines", "context": None, "sections": ["A", "B"], "drafts": ["a", "b"]}
    )
    *pieces, result = list(TemplateProvider().stream(request, timeout=1))
    assert len(pieces) > 2 and "".join(pieces) == result.text  # type: ignore[arg-type]
