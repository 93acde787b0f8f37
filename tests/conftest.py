"""Shared fixtures: the app and client (offline provider), the fake upstream, servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support import FakeUpstreamProcess, make_app, redis_server, stop_apps


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration and fleet tests drive real processes over HTTP; coverage is measured in the
    pytest process only, where such a test runs nothing but HTTP clients. Tracing those clients
    cost CPU and counted nothing, so coverage pauses for them (only when it runs at all:
    pytest-cov's marker fails under --no-cov)."""
    plugin = config.pluginmanager.get_plugin("_cov")
    if plugin is None or getattr(plugin, "cov_controller", None) is None:
        return
    for item in items:
        if item.nodeid.startswith(("tests/integration/", "tests/fleet/")):
            item.add_marker(pytest.mark.no_cover)


@pytest.fixture(autouse=True)
def _apps_stopped() -> Iterator[None]:
    """Whatever an app built by make_app started is stopped when its test ends."""
    yield
    stop_apps()


@pytest.fixture
def app() -> Flask:
    return make_app()  # type: ignore[no-any-return]


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def _fake_upstream_process() -> Iterator[FakeUpstreamProcess]:
    upstream = FakeUpstreamProcess()
    yield upstream
    upstream.stop()


@pytest.fixture
def fake_upstream(_fake_upstream_process: FakeUpstreamProcess) -> FakeUpstreamProcess:
    """The fake model API, with counters, faults and latency reset for each test."""
    _fake_upstream_process.reset()
    return _fake_upstream_process


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A private Redis on a free port, shared by one test module (each test uses its own keys)."""
    with redis_server() as url:
        yield url


@pytest.fixture
def own_redis_url() -> Iterator[str]:
    """A private Redis for one test alone: it may stop it."""
    with redis_server() as url:
        yield url
