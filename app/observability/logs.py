"""Logging: one JSON object per line on stdout, at the configured level."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from flask import Flask

from config.settings import Settings

__all__ = ["JSONFormatter", "init_app"]

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    """Render a record and its `extra` fields as a single JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def init_app(app: Flask, settings: Settings) -> None:
    """Send the app's loggers to stdout as JSON (once per process)."""
    root = logging.getLogger("app")
    if not any(getattr(h, "_pb_json", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JSONFormatter())
        handler._pb_json = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.propagate = False
    root.setLevel(settings.log_level)
