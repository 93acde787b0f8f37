"""The fake upstream speaks the real wire formats: validated with the official SDKs' types."""

from __future__ import annotations

import anthropic.types
import openai.types.chat
import pytest
import requests

from app.services.tasks import TASKS
from loadtest.fake_upstream import answer_text
from tests.support import FakeUpstreamProcess


def _post(upstream: FakeUpstreamProcess, path: str, body: dict) -> requests.Response:
    return requests.post(upstream.url + path, json=body, timeout=5)


def test_messages_response_is_an_anthropic_message(fake_upstream: FakeUpstreamProcess) -> None:
    body = {"model": "claude-x", "max_tokens": 50, "system": "sys", "messages": [{"role": "user", "content": "hello"}]}
    message = anthropic.types.Message.model_validate(_post(fake_upstream, "/v1/messages", body).json())
    assert message.content[0].type == "text"
    assert message.usage.input_tokens > 0
    assert message.model == "claude-x"


def test_chat_response_is_an_openai_chat_completion(fake_upstream: FakeUpstreamProcess) -> None:
    body = {"model": "gpt-x", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]}
    completion = openai.types.chat.ChatCompletion.model_validate(
        _post(fake_upstream, "/v1/chat/completions", body).json()
    )
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.total_tokens > 0


def test_injected_errors_use_the_anthropic_error_shape(fake_upstream: FakeUpstreamProcess) -> None:
    fake_upstream.control(faults=[{"status": 529}])
    response = _post(fake_upstream, "/v1/messages", {"model": "m", "max_tokens": 1, "messages": []})
    assert response.status_code == 529
    error = anthropic.types.ErrorResponse.model_validate(response.json())
    assert error.error.type == "overloaded_error"


def test_counters(fake_upstream: FakeUpstreamProcess) -> None:
    body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}
    with requests.Session() as session:
        for _ in range(3):
            session.post(fake_upstream.url + "/v1/messages", json=body, timeout=5)
    stats = fake_upstream.stats()
    assert stats["calls"] == {"/v1/messages": 3}
    assert stats["connections"] == 1


@pytest.mark.parametrize("task", sorted(TASKS))
def test_json_answers_fit_our_tasks(task: str) -> None:
    from app.services.answers import json_answer

    json_answer(TASKS[task].answer)(answer_text(TASKS[task].system, "x", "f"))


def test_a_call_begun_before_a_reset_does_not_count_after_it(fake_upstream: FakeUpstreamProcess) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tests.support import wait_until

    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "held across a reset"}]}
    with ThreadPoolExecutor(1) as pool:
        fake_upstream.control(hold=True)
        held = pool.submit(_post, fake_upstream, "/v1/messages", body)
        wait_until(lambda: fake_upstream.held() == 1, what="the call at the gate")
        fake_upstream.reset()  # releases the gate: the old call completes now
        assert held.result().status_code == 200
    stats = fake_upstream.stats()
    assert stats["tokens"] == {"input": 0, "output": 0} and stats["inFlight"] == 0
