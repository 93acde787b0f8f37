"""GET /health, /health/live, /health/ready: probes that never call the paid upstream."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from flask import Blueprint, Response, jsonify

from app.parts import parts

__all__ = ["bp"]

bp = Blueprint("health", __name__)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _checks() -> dict[str, dict[str, object]]:
    found = parts()
    checks = found.prompts.readiness()
    checks["draining"] = {"status": "fail" if found.draining else "ok"}
    if found.warm is not None:
        checks["cacheWarm"] = {"status": "ok", "entries": found.warm[0], "seconds": found.warm[1]}
    jobs = found.jobs or found.jobs_unavailable
    if jobs is not None:
        checks["jobs"] = jobs.readiness()
    return checks


@bp.get("/health")
def health() -> Response:
    found = parts()
    settings = found.settings
    return jsonify(
        status="healthy",
        timestamp=_now(),
        uptime=round(time.time() - found.started_at, 3),
        provider=settings.llm_provider,
        model=settings.llm_model,
    )


@bp.get("/health/live")
def live() -> Response:
    return jsonify(status="alive", timestamp=_now())


@bp.get("/health/ready")
def ready() -> Response:
    checks = _checks()
    statuses = {check["status"] for check in checks.values()}
    # A warning (Redis unreachable, breaker open) still serves: degraded, but in the pool.
    status = "not ready" if "fail" in statuses else "degraded" if "warn" in statuses else "ready"
    response = jsonify(status=status, timestamp=_now(), checks=checks)
    response.status_code = 503 if status == "not ready" else 200
    return response
