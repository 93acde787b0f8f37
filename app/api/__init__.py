"""HTTP API: one blueprint per resource; views parse, call one service, serialize. The six JSON
endpoints are `JsonEndpoint`s, which the request pipeline may run without Flask."""

from flask import Flask

from app.api import health, jobs, openapi, optimize, questions, scenes, stats, suggestions
from app.api._body import JsonEndpoint

__all__ = ["JSON_ENDPOINTS", "JsonEndpoint", "init_app"]

JSON_ENDPOINTS: tuple[JsonEndpoint, ...] = (
    optimize.OPTIMIZE,
    questions.QUESTIONS,
    suggestions.ENHANCEMENT,
    suggestions.CUSTOM,
    scenes.SCENE,
    suggestions.CREATIVE,
)


def init_app(app: Flask) -> None:
    for module in (optimize, questions, suggestions, scenes, jobs, health, openapi, stats):
        app.register_blueprint(module.bp)
