"""One exception hierarchy, one JSON error shape, one place that turns errors into responses."""

from __future__ import annotations

import logging
import math
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from app.exchange import current
from app.render import Answer, json_parts
from app.routing import redirect_location

__all__ = [
    "APIError",
    "BadRequestError",
    "CircuitOpenError",
    "ForbiddenError",
    "GatewayTimeoutError",
    "InvalidAnswerError",
    "MalformedJSONError",
    "PayloadTooLargeError",
    "RateLimitUnavailableError",
    "RequestTimeoutError",
    "ServiceUnavailableError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "UnsupportedMediaTypeError",
    "UpstreamAuthError",
    "UpstreamError",
    "ValidationFailedError",
    "api_error_parts",
    "error_from_wire",
    "error_parts",
    "error_response",
    "error_to_wire",
    "http_error_parts",
    "init_app",
    "retry_after_seconds",
    "unexpected_error_parts",
]

log = logging.getLogger(__name__)


class APIError(Exception):
    """Root of every error the service answers with; carries its HTTP status."""

    status_code = 500
    message = "Internal server error"
    default_details = "unexpected error; quote the requestId when reporting it"

    def __init__(
        self,
        message: str | None = None,
        *,
        details: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        self.details = details or self.default_details
        self.retry_after = retry_after


class BadRequestError(APIError):
    status_code = 400
    message = "Bad request"
    default_details = "the request is not valid"


class MalformedJSONError(BadRequestError):
    message = "Malformed JSON"
    default_details = "the body is not valid JSON"


class ValidationFailedError(BadRequestError):
    message = "Validation failed"
    default_details = "the body does not match the schema in /openapi.json"


class UnauthorizedError(APIError):
    status_code = 401
    message = "API key required"
    default_details = "send X-API-Key: <key> or Authorization: Bearer <key>"


class ForbiddenError(APIError):
    status_code = 403
    message = "API key not valid"
    default_details = "the key sent is not one of the configured API keys"


class UnsupportedMediaTypeError(APIError):
    status_code = 415
    message = "Content-Type must be application/json"
    default_details = "send the body as JSON with Content-Type: application/json"


class RequestTimeoutError(APIError):
    status_code = 408
    message = "Request timeout"
    default_details = "the request body did not arrive whole within BODY_READ_TIMEOUT seconds"


class PayloadTooLargeError(APIError):
    status_code = 413
    message = "Request body too large"
    default_details = "the body is larger than MAX_BODY_BYTES"


class TooManyRequestsError(APIError):
    status_code = 429
    message = "Too many requests"
    default_details = "the rate limit is reached; retry after Retry-After seconds"


class RateLimitUnavailableError(APIError):
    status_code = 503
    message = "Rate limit unavailable"
    default_details = "the shared rate limit cannot be checked (RATE_LIMIT_ON_REDIS_ERROR=closed); retry shortly"


class UpstreamError(APIError):
    """The model API failed or answered something unusable."""

    status_code = 502
    message = "Upstream model API error"
    default_details = "the model API failed or answered something unusable"


class InvalidAnswerError(UpstreamError):
    message = "Upstream model returned an invalid answer"
    default_details = "the model's answer could not be used"


class UpstreamAuthError(UpstreamError):
    message = "Upstream authentication failed"
    default_details = "the model API rejected the service's own key; operators: check it"


class GatewayTimeoutError(APIError):
    status_code = 504
    message = "Upstream model API timed out"
    default_details = "the model API did not answer within the request's deadline"


class ServiceUnavailableError(APIError):
    status_code = 503
    message = "Upstream model API unavailable"
    default_details = "the model API cannot take requests now; retry after Retry-After seconds"


class CircuitOpenError(ServiceUnavailableError):
    message = "Upstream model API temporarily unavailable (circuit open)"
    default_details = "recent upstream calls failed; calls resume after Retry-After seconds"


def _request_id() -> str | None:
    exchange = current()
    return exchange.request_id if exchange is not None else None


def error_parts(status: int, message: str, details: str, *, retry_after: float | None = None, **extra: Any) -> Answer:
    """The one JSON error shape as WSGI parts: {"error", "details", ...extra, "requestId"}, with
    Retry-After (whole seconds, at least 1) when given."""
    body = {"error": message, "details": details, **{k: v for k, v in extra.items() if v is not None}}
    body["requestId"] = _request_id()
    headers = [("Retry-After", str(retry_after_seconds(retry_after)))] if retry_after is not None else []
    return json_parts(status, body, headers)


def retry_after_seconds(seconds: float) -> int:
    """Retry-After's value: whole seconds, at least 1."""
    return max(1, math.ceil(seconds))


def api_error_parts(error: APIError) -> Answer:
    """An APIError as WSGI parts."""
    return error_parts(error.status_code, error.message, error.details, retry_after=error.retry_after)


def error_response(status: int, message: str, details: str, **extra: Any) -> Response:
    """The one JSON error shape as a Flask response."""
    return _response(error_parts(status, message, details, **extra))


def _response(parts: Answer) -> Response:
    status, headers, body = parts
    return Response(body, status, headers)


def _handle_api_error(error: APIError) -> Response:
    return _response(api_error_parts(error))


def http_error_parts(error: HTTPException, path: str) -> Answer:
    """A Werkzeug HTTP error (routing's 404, 405 and 308 among them) in the one JSON shape."""
    status = error.code or 500
    if status == 404:
        return error_parts(404, "Not found", "no route for this path", path=path)
    if status == 413:
        return error_parts(413, PayloadTooLargeError.message, PayloadTooLargeError.default_details)
    if isinstance(error, RequestRedirect):
        location = redirect_location(error)
        status_, headers, body = error_parts(
            308, "Permanent Redirect", f"this route's path is {location}", location=location
        )
        headers.append(("Location", location))
        return status_, headers, body
    allowed = sorted(getattr(error, "valid_methods", None) or ()) if status == 405 else None
    if allowed:
        status_, headers, body = error_parts(405, error.name, f"allowed methods: {', '.join(allowed)}")
        headers.append(("Allow", ", ".join(allowed)))
        return status_, headers, body
    return error_parts(status, error.name, str(error.description or error.name))


def _handle_http_exception(error: HTTPException) -> Response:
    return _response(http_error_parts(error, request.path))


def _handle_unexpected(error: Exception) -> Response:
    return _response(unexpected_error_parts())


def unexpected_error_parts() -> Answer:
    """Log the exception being handled, with the request id; return the 500 answer."""
    log.exception("unhandled error", extra={"request_id": _request_id()})
    return error_parts(500, APIError.message, APIError.default_details)


def init_app(app: Flask) -> None:
    """Register the handlers: one for our errors, one for HTTP errors, one for the rest."""
    app.register_error_handler(APIError, _handle_api_error)
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(Exception, _handle_unexpected)


def error_to_wire(exc: BaseException) -> dict[str, Any]:
    """Describe an error so that another process can raise the same one (coalesced followers)."""
    if not isinstance(exc, APIError):
        exc = APIError()
    return {
        "class": type(exc).__name__,
        "message": exc.message,
        "details": exc.details,
        "retry_after": exc.retry_after,
    }


def error_from_wire(data: dict[str, Any]) -> APIError:
    """Rebuild the error described by `error_to_wire`."""
    classes = {cls.__name__: cls for cls in _subclasses(APIError)}
    cls = classes.get(str(data.get("class")), APIError)
    return cls(data.get("message"), details=data.get("details"), retry_after=data.get("retry_after"))


def _subclasses(cls: type[APIError]) -> list[type[APIError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _subclasses(sub)
    return found
