"""The API's unit tests run twice: with the pipeline's shortcut (a JSON endpoint's handler run
past Flask's routing) and without it (Flask routes to the endpoint's view). Both must answer
alike (tests/unit/api/test_pipeline.py compares the two in full)."""

from __future__ import annotations

import pytest
from flask import Flask

from app.pipeline import pipeline_of
from tests.support import make_app


@pytest.fixture(params=["shortcut", "through-flask"])
def app(request: pytest.FixtureRequest) -> Flask:
    built = make_app()
    pipeline_of(built).shortcut = request.param == "shortcut"
    return built
