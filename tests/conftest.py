"""Shared fixtures: the app and client (offline provider), the fake upstream, servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from tests.support import FakeUpstreamProcess


@pytest.fixture
def app() -> Flask:
    return create_app({"APP_ENV": "testing"})


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
