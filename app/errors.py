"""One JSON error body for every non-2xx response."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from werkzeug.exceptions import HTTPException, InternalServerError

log = logging.getLogger(__name__)


class APIError(HTTPException):
    """An HTTP error with a machine-readable code and extra fields for the body."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(description=message)
        self.code = status
        self.error_code = code
        self.details = details
        self.extra_headers: dict[str, str] = {}

    def with_headers(self, headers: dict[str, str]) -> APIError:
        """Add response headers (Retry-After, WWW-Authenticate) and return the error."""
        self.extra_headers.update(headers)
        return self

    def get_headers(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        """Return the default headers and the error's own (Retry-After, WWW-Authenticate)."""
        return [*super().get_headers(*args, **kwargs), *self.extra_headers.items()]


def error_response(status: int, code: str, message: str, **details: Any) -> Response:
    """Build the error body every non-2xx response uses."""
    response = jsonify(error={"status": status, "code": code, "message": message, **details})
    response.status_code = status
    return response


def handle_http_exception(error: HTTPException) -> Response:
    """Answer any HTTP error (routing 404/405 and 413 included) with the JSON body."""
    status = error.code or 500
    if isinstance(error, APIError):
        response = error_response(status, error.error_code, error.description or "", **error.details)
    elif isinstance(error, InternalServerError):
        # Never show internals: the traceback goes to the log only.
        response = error_response(500, "internal_error", "The server failed to handle the request.")
    else:
        code = (error.name or "error").lower().replace(" ", "_")
        response = error_response(status, code, error.description or "")
    # Keep headers such as Allow (405) and Retry-After from the original error.
    for key, value in error.get_headers():
        if key.lower() != "content-type":
            response.headers[key] = value
    return response


def handle_redis_down(error: Exception) -> Response:
    """Answer 503 while Redis cannot be reached; the next request tries again."""
    log.warning("Redis is unreachable: %s", error)
    response = error_response(
        503, "redis_unavailable", "The job store (Redis) is unreachable; try again shortly."
    )
    response.headers["Retry-After"] = "5"
    return response


def init_app(app: Flask) -> None:
    """Register the app-wide error handlers."""
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(RedisConnectionError, handle_redis_down)
    app.register_error_handler(RedisTimeoutError, handle_redis_down)
