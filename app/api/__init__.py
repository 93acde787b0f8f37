"""HTTP API: one blueprint per resource; views parse, call one service, serialize."""

from flask import Flask

from app.api import _cached, health, openapi, optimize, questions, scenes, stats, suggestions

__all__ = ["init_app", "init_cached"]

init_cached = _cached.init_app


def init_app(app: Flask) -> None:
    for module in (optimize, questions, suggestions, scenes, health, openapi, stats):
        app.register_blueprint(module.bp)
