"""GET /health, /health/live, /health/ready: probes that never call the paid upstream."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from flask import Blueprint, Response, current_app, jsonify

__all__ = ["bp"]

bp = Blueprint("health", __name__)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _checks() -> dict[str, dict[str, object]]:
    gateway = current_app.extensions["prompt_service"].gateway
    breaker = gateway.upstream.breaker
    checks: dict[str, dict[str, object]] = {
        "provider": {"status": "ok", "name": gateway.upstream.provider.name},
        # An open breaker still serves cached and stale answers: a warning, not "not ready".
        "circuitBreaker": {"status": "ok" if breaker.state == "closed" else "warn", "state": breaker.state},
        "draining": {"status": "fail" if current_app.extensions.get("draining") else "ok"},
    }
    if gateway.l2 is not None:
        # Redis down degrades to L1 and upstream: reported, never fatal.
        checks["redis"] = {"status": "ok" if gateway.l2.ping() else "warn"}
    return checks


@bp.get("/health")
def health() -> Response:
    started = current_app.extensions["started_at"]
    settings = current_app.extensions["settings"]
    return jsonify(
        status="healthy",
        timestamp=_now(),
        uptime=round(time.time() - started, 3),
        provider=settings.llm_provider,
        model=settings.llm_model,
    )


@bp.get("/health/live")
def live() -> Response:
    return jsonify(status="alive", timestamp=_now())


@bp.get("/health/ready")
def ready() -> Response:
    checks = _checks()
    ok = all(check["status"] != "fail" for check in checks.values())
    response = jsonify(status="ready" if ok else "not ready", timestamp=_now(), checks=checks)
    response.status_code = 200 if ok else 503
    return response
