"""GET /openapi.json: an OpenAPI 3.1 document generated from the models that validate requests."""

from __future__ import annotations

from functools import cache
from typing import Any

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app import schemas
from app.api._edge import DOOR_PARAMETER
from app.services.operations import OPERATIONS

__all__ = ["bp", "build_spec"]

bp = Blueprint("openapi", __name__)

_ERRORS = {
    "400": "Malformed JSON or invalid field",
    "401": "API key missing",
    "403": "API key wrong",
    "413": "Body too large",
    "415": "Content-Type is not application/json",
    "429": "Rate limit reached",
    "502": "Upstream failed or answered something unusable",
    "503": "Upstream unavailable or circuit open",
    "504": "Upstream timed out",
}


_STREAM_EVENT = {
    "type": "object",
    "properties": {
        "event": {
            "type": "string",
            "enum": ["draft_delta", "draft", "refined_delta", "refined", "done", "error", "status"],
        },
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
    "required": ["event", "data"],
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


_PROBE = {
    "type": "object",
    "properties": {"status": {"type": "string"}, "timestamp": {"type": "string"}},
    "required": ["status", "timestamp"],
}
_READY = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["ready", "degraded", "not ready"]},
        "timestamp": {"type": "string"},
        "checks": {"type": "object", "additionalProperties": {"type": "object"}},
    },
    "required": ["status", "timestamp", "checks"],
}


def _operations_paths() -> dict[str, Any]:
    """The operator's endpoints: probes, metrics and statistics (GET, no body)."""
    error = {"content": _json(_ref(schemas.ErrorResponse))}
    guarded = {
        "401": {**error, "description": "METRICS_TOKEN set and no token sent"},
        "403": {**error, "description": "METRICS_TOKEN set and a wrong token sent"},
        "404": {**error, "description": "METRICS_ENABLED is false"},
    }

    def get(operation_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
        return {
            "get": {"operationId": operation_id, "summary": summary, "tags": ["operations"], "responses": responses}
        }

    return {
        "/health": get(
            "health",
            "Process health, provider and model",
            {"200": {"description": "Healthy", "content": _json(_PROBE)}},
        ),
        "/health/live": get(
            "live", "Liveness: the process answers", {"200": {"description": "Alive", "content": _json(_PROBE)}}
        ),
        "/health/ready": get(
            "ready",
            "Readiness: provider, breaker, Redis and drain checks (never calls the paid API)",
            {
                "200": {"description": "Ready, or degraded but serving", "content": _json(_READY)},
                "503": {"description": "Not ready (draining, or a check failed)", "content": _json(_READY)},
            },
        ),
        "/metrics": get(
            "metrics",
            "Prometheus text exposition, summed over this instance's workers",
            {"200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}, **guarded},
        ),
        "/stats": get(
            "stats",
            "The same figures as JSON, for this instance (behind nginx: whichever instance answered)",
            {"200": {"description": "Statistics", "content": _json({"type": "object"})}, **guarded},
        ),
    }


_PREFER = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "description": "respond-async (RFC 7240): accept the request as a job and answer 202",
    "schema": {"type": "string"},
}
_SHARED = {
    "ETag": {"schema": {"type": "string"}, "description": "The body's strong tag; If-None-Match gets 304"},
    "Cache-Control": {
        "schema": {"type": "string"},
        "description": "public with s-maxage when shareable, else no-store",
    },
}
_DOOR_HEADER = {
    "schema": {"type": "string"},
    "description": "A shareable answer's GET: this request in its URL, for a CDN (absent when too long)",
}


def _door_parameter(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "name": DOOR_PARAMETER,
        "in": "query",
        "required": True,
        "description": "The request's JSON body, URL-encoded",
        "content": _json(_ref(model)),
    }


_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _job_paths(error: dict[str, Any]) -> dict[str, Any]:
    """POST /api/jobs, GET and DELETE /api/jobs/{job_id}, GET /api/jobs/{job_id}/events."""
    common = {code: {**error, "description": text} for code, text in _ERRORS.items() if code in ("401", "403", "429")}
    unavailable = {"503": {**error, "description": "Jobs unavailable (no store), or the queue is full"}}
    missing = {"404": {**error, "description": "No such job for this caller (or it expired)"}}
    job = {"description": "The job", "content": _json(_ref(schemas.JobResponse))}

    def operation(operation_id: str, summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {
            "operationId": operation_id,
            "summary": summary,
            "tags": ["jobs"],
            "responses": {**responses, **common, **unavailable},
            **extra,
        }

    return {
        "/api/jobs": {
            "post": operation(
                "submitJob",
                "Run one of the six JSON endpoints as a job (priority high, normal or low)",
                {
                    "202": {
                        "description": "Accepted (succeeded at once when the answer was cached)",
                        "content": _json(_ref(schemas.JobAccepted)),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    **{
                        code: {**error, "description": text}
                        for code, text in _ERRORS.items()
                        if code in ("400", "413", "415")
                    },
                },
                requestBody={"required": True, "content": _json(_ref(schemas.JobSubmission))},
            )
        },
        "/api/jobs/{job_id}": {
            "get": operation(
                "getJob",
                "A job's status and, once finished, the endpoint's answer or its error",
                {"200": {**job, "headers": {"Retry-After": {"schema": {"type": "integer"}}}}, **missing},
                parameters=[_JOB_ID],
            ),
            "delete": operation("cancelJob", "Cancel a job", {"200": job, **missing}, parameters=[_JOB_ID]),
        },
        "/api/jobs/{job_id}/events": {
            "get": operation(
                "jobEvents",
                "A job's server-sent events: status on each change; for optimize, refined_delta, refined, done",
                {
                    "200": {
                        "description": "The event stream",
                        "content": {"text/event-stream": {"schema": _STREAM_EVENT}},
                    },
                    **missing,
                },
                parameters=[_JOB_ID],
            )
        },
    }


def _stream_path(error: dict[str, Any]) -> dict[str, Any]:
    """POST /api/optimize-stream: the event stream, and the JSON errors of bad input."""
    return {
        "post": {
            "operationId": "optimizeStream",
            "summary": "Optimize a prompt, streamed as server-sent events while the model writes it",
            "description": (
                "Events (data is one JSON object each): refined_delta {delta}, then refined {refined, status, "
                "metadata}, then done {status}; on failure error {error, details, status, requestId}. With "
                "LLM_DRAFT_MODEL set, draft_delta and draft come first. Bad input gets the JSON errors below."
            ),
            "requestBody": {"required": True, "content": _json(_ref(schemas.OptimizeRequest))},
            "responses": {
                "200": {
                    "description": "The event stream",
                    # The schema of one event (as OpenAPI 3.2's itemSchema; fuzzers check each).
                    "content": {"text/event-stream": {"schema": _STREAM_EVENT}},
                    "headers": {"X-Cache": {"schema": {"type": "string", "enum": ["HIT", "MISS", "COALESCED"]}}},
                },
                **{code: {**error, "description": text} for code, text in _ERRORS.items()},
            },
        }
    }


@cache
def build_spec() -> dict[str, Any]:
    """Return the OpenAPI document (built once; the models do not change at run time)."""
    operations = OPERATIONS.values()
    models: list[tuple[type[BaseModel], Any]] = [(op.model, "validation") for op in operations]
    models += [(op.reply, "serialization") for op in operations]
    models.append((schemas.ErrorResponse, "serialization"))
    models += [(schemas.JobSubmission, "validation"), (schemas.JobResponse, "serialization")]
    models.append((schemas.JobAccepted, "serialization"))
    _, defs = models_json_schema(models, ref_template="#/components/schemas/{model}")
    error = {"description": "", "content": _json(_ref(schemas.ErrorResponse))}
    paths: dict[str, Any] = {}
    for op in operations:
        headers: dict[str, Any] = {
            "X-Cache": {"schema": {"type": "string", "enum": ["HIT", "MISS", "COALESCED", "STALE"]}}
        }
        headers |= _SHARED
        answer = {"description": "The answer", "content": _json(_ref(op.reply)), "headers": headers}
        errors = {code: {**error, "description": text} for code, text in _ERRORS.items()}
        posted = {**answer, "headers": headers | {"Content-Location": _DOOR_HEADER}}
        paths[op.path] = {
            "post": {
                "operationId": op.operation_id,
                "summary": op.summary,
                "requestBody": {"required": True, "content": _json(_ref(op.model))},
                "responses": {"200": posted, **errors},
            },
            "get": {
                "operationId": op.operation_id + "ByUrl",
                "summary": op.summary + " (the request in the URL, for a CDN)",
                "parameters": [_door_parameter(op.model)],
                "responses": {"200": answer, "304": {"description": "If-None-Match named the answer"}}
                | {code: value for code, value in errors.items() if code != "415"}
                | {"414": {**error, "description": "The URL is over 8,190 bytes: POST the request instead"}},
            },
        }
    paths["/api/optimize-stream"] = _stream_path(error)
    paths |= _job_paths(error)
    for path in (op.path for op in operations):
        paths[path]["post"]["parameters"] = [_PREFER]
        paths[path]["post"]["responses"]["202"] = {
            "description": "Prefer: respond-async: accepted as a job (Preference-Applied: respond-async)",
            "content": _json(_ref(schemas.JobAccepted)),
            "headers": {"Location": {"schema": {"type": "string"}}},
        }
    paths |= _operations_paths()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Prompt Builder API",
            "version": "1.0.0",
            "description": "Turns a rough prompt plus a mode into an optimized prompt.",
        },
        "paths": paths,
        "components": {"schemas": defs["$defs"]},
    }


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(build_spec())
