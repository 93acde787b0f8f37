"""Upstream faults through a real server: each maps to the right status after the right attempts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.support import FakeUpstreamProcess, Server, provider_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["anthropic", "openai"])
def remote(request: pytest.FixtureRequest, _fake_upstream_process: FakeUpstreamProcess) -> Iterator[tuple[str, Server]]:
    with provider_server(request.param, _fake_upstream_process) as served:
        yield served


@pytest.mark.parametrize(
    ("faults", "status", "attempts"),
    [
        ([{"status": 500, "times": 3}], 502, 3),
        ([{"status": 529, "times": 3}], 502, 3),
        ([{"status": 503}], 200, 2),
        ([{"status": 400}], 502, 1),
        ([{"status": 401}], 502, 1),
        ([{"status": 429, "times": 3, "headers": {"retry-after-ms": "50"}}], 503, 3),
        ([{"action": "invalid_json"}], 502, 1),
        ([{"action": "wrong_shape"}], 502, 1),
        ([{"action": "reset"}], 200, 2),
        ([{"action": "delay", "seconds": 3}], 504, 1),
    ],
)
def test_upstream_faults(
    remote: tuple[str, Server], fake_upstream: FakeUpstreamProcess, faults: list, status: int, attempts: int
) -> None:
    _, server = remote
    fake_upstream.control(faults=faults)
    body = {"prompt": f"fault {faults}", "mode": "code"}
    response = requests.post(server.url + "/api/optimize", json=body, timeout=15)
    assert response.status_code == status, response.text
    assert fake_upstream.calls() == attempts
    if status == 503:
        assert int(response.headers["Retry-After"]) >= 1
    if status >= 500:
        assert response.json()["requestId"]
    assert "sk-" not in response.text
    # the worker still serves afterwards
    assert requests.post(server.url + "/api/optimize", json={**body, "prompt": "after"}, timeout=10).status_code == 200


def test_invalid_model_json_is_502(remote: tuple[str, Server], fake_upstream: FakeUpstreamProcess) -> None:
    _, server = remote
    fake_upstream.control(faults=[{"action": "wrong_shape"}])
    response = requests.post(server.url + "/api/generate-questions", json={"prompt": "odd"}, timeout=10)
    assert response.status_code == 502
    assert "invalid" in response.json()["error"].lower()
