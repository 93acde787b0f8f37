"""/graphql on a real gunicorn with the fake model API: the operations of one request are in
flight at once (all parked at the upstream's gate together), an operation coalesces with a REST
call of the same request, and a failing upstream answers each operation with REST's status."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any

import pytest
import requests

from tests.support import ROOT, FakeUpstreamProcess, Server, held_burst, provider_env, start_server, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(_fake_upstream_process: FakeUpstreamProcess) -> Iterator[Server]:
    env = {
        **provider_env("anthropic", _fake_upstream_process),
        "UPSTREAM_TIMEOUT": "20",
        "UPSTREAM_MAX_RETRIES": "0",
        "BREAKER_FAIL_MAX": "1000",
        "RATE_LIMIT": "",
    }
    with start_server(env, workers=1) as found:
        yield found


def _graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> requests.Response:
    return requests.post(url + "/graphql", json={"query": query, "variables": variables or {}}, timeout=30)


def _questions(prefix: str, count: int) -> str:
    fields = (f'q{i}: generateQuestions(input: {{prompt: "{prefix} {i}"}}) {{ provider }}' for i in range(count))
    return "{ " + " ".join(fields) + " }"


def test_the_operations_of_one_request_are_in_flight_together(
    server: Server, fake_upstream: FakeUpstreamProcess
) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool, fake_upstream.hold():
        answer = pool.submit(_graphql, server.url, _questions("together", 5))
        # All five wait at the gate at once: a batch run one after another would park one.
        wait_until(lambda: fake_upstream.held() == 5, what="five operations parked at the upstream at once")
        fake_upstream.release()
        response = answer.result()
    assert response.status_code == 200, response.text
    assert sorted(response.json()["data"]) == [f"q{i}" for i in range(5)]
    assert fake_upstream.calls() == 5


def test_an_operation_coalesces_with_rest_callers_of_the_same_request(
    server: Server, fake_upstream: FakeUpstreamProcess
) -> None:
    body = {"prompt": "Coalesce me across doors", "mode": "reasoning"}
    query = "query($i: OptimizeInput!) { a: optimize(input: $i) { optimizedPrompt } }"

    def send(i: int) -> Any:
        if i % 2:
            rest = requests.post(server.url + "/api/optimize", json=body, timeout=30)
            assert rest.status_code == 200, rest.text
            return rest.json()["optimizedPrompt"]
        answer = _graphql(server.url, query, {"i": body}).json()
        assert "errors" not in answer, answer
        return answer["data"]["a"]["optimizedPrompt"]

    answers, parked = held_burst(fake_upstream, [server.url], send, 4)
    assert parked == 1 and fake_upstream.calls() == 1
    assert len(set(answers)) == 1


@pytest.mark.parametrize("fault", [500, 529, 429, 401])
def test_a_failing_upstream_answers_each_operation_with_rest_status(
    server: Server, fake_upstream: FakeUpstreamProcess, fault: int
) -> None:
    fake_upstream.control(sticky={"status": fault, "headers": {"retry-after": "3"}})
    try:
        rest = requests.post(server.url + "/api/generate-questions", json={"prompt": f"fails {fault}"}, timeout=30)
        response = _graphql(server.url, _questions(f"fails {fault}", 2))
    finally:
        fake_upstream.control(sticky=None)
    assert rest.status_code >= 500 and response.status_code == rest.status_code, response.text
    errors = response.json()["errors"]
    code = HTTPStatus(rest.status_code).phrase.upper().replace(" ", "_")
    assert {(e["extensions"]["code"], e["extensions"]["status"]) for e in errors} == {(code, rest.status_code)}
    assert {e["message"] for e in errors} == {rest.json()["error"]}
    if "Retry-After" in rest.headers:
        assert response.headers["Retry-After"] and all("retryAfter" in e["extensions"] for e in errors)


def test_the_typed_client_generated_from_the_sdl_answers(server: Server) -> None:
    """clients/python (ariadne-codegen, from docs/schema.graphql): typed inputs, typed answers,
    the editor's screen in one round trip."""
    sys.path.insert(0, str(ROOT / "clients" / "python"))
    try:
        from prompt_builder_client import (  # type: ignore[import-not-found]
            CreativeInput,
            ElementType,
            EnhancementInput,
            Mode,
            OptimizeInput,
            PromptBuilderClient,
            SceneChangeInput,
        )
    finally:
        sys.path.remove(str(ROOT / "clients" / "python"))
    with PromptBuilderClient(url=server.url + "/graphql") as client:
        optimized = client.optimize(OptimizeInput(prompt="Typed all the way", mode=Mode.code)).optimize
        assert optimized is not None and optimized.mode == Mode.code and optimized.optimized_prompt
        panel = client.editor_panel(
            EnhancementInput(highlightedText="fast", fullPrompt="make it fast"),
            SceneChangeInput(changedField="location", newValue="Paris", fullPrompt="A walk in Rome"),
            CreativeInput(elementType=ElementType.mood),
        )
        assert panel.enhance is not None and panel.enhance.suggestions
        assert panel.scene is not None and panel.scene.confidence.value in ("high", "medium", "low")
        assert panel.ideas is not None and panel.ideas.suggestions[0].text
