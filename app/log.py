"""Logging for web and worker processes: one format, the request id and the job id on every line.

LOG_FORMAT=text gives `2026-11-21 08:00:00,120 INFO app.api [request 5b0e...] [job -] message`;
LOG_FORMAT=json gives one JSON object per line with the same fields. gunicorn's access and
error logs use the same format (app.gunicorn_log.GunicornLogger, set in gunicorn.conf.py).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import Flask, has_request_context, request
from rq import get_current_job
from rq.logutils import ColorizingStreamHandler

from app.config import MIB

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

FORMAT = "%(asctime)s %(levelname)s %(name)s [request %(request_id)s] [job %(job_id)s] %(message)s"
FORMATS = ("text", "json")
REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_ENVIRON_HEADER = "HTTP_X_REQUEST_ID"
# The WSGI environ key that carries the request id to gunicorn's access log.
REQUEST_ID_ENVIRON = "app.request_id"
# A client's (or proxy's) request id is kept when it looks like an id: no spaces, quotes or
# control characters that would garble a log line, and not too long.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._~:@+/=-]{1,128}")
# Marks the handlers configure() adds to the root logger.
OURS = "_app_log_handler"
# The loggers RQ gives handlers of its own; their records go to ours instead.
RQ_LOGGERS = ("rq.worker", "rq.job", "rq.scheduler", "rq.queue", "rq.registry")
# What every LogRecord has: the other attributes are a line's `extra` fields, kept in JSON.
_RECORD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "request_id",
    "job_id",
}


class ContextFilter(logging.Filter):
    """Add the request's id and the running job's id (or '-') to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Set `request_id` and `job_id` on the record unless it carries them; let it through."""
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id() or "-"
        if not hasattr(record, "job_id"):
            job = get_current_job()
            record.job_id = job.id if job else "-"
        return True


# The name the job-id tests know it by.
JobIdFilter = ContextFilter


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: time, level, logger, ids, message, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a JSON line."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "job_id": getattr(record, "job_id", "-"),
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


def make_formatter(log_format: str) -> logging.Formatter:
    """Return the formatter for LOG_FORMAT ("text" or "json")."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return logging.Formatter(FORMAT)
    raise ValueError(f"LOG_FORMAT must be one of {', '.join(FORMATS)}, not {log_format!r}")


def prepare_handler(handler: logging.Handler, log_format: str) -> logging.Handler:
    """Give a handler the app's format and the request and job ids; return it."""
    handler.setFormatter(make_formatter(log_format))
    if not any(isinstance(existing, ContextFilter) for existing in handler.filters):
        handler.addFilter(ContextFilter())
    return handler


def configure(level: str | int, log_format: str, log_file: str = "") -> None:
    """Send every record to the console (and LOG_FILE, rotated) in the app's format, once per process."""
    make_formatter(log_format)  # a bad LOG_FORMAT stops the process here, at its start
    root = logging.getLogger()
    root.setLevel(level)
    # The app may be built more than once in a process: add each handler once, format all anew.
    ours = [handler for handler in root.handlers if getattr(handler, OURS, False)]
    files = {handler.baseFilename for handler in ours if isinstance(handler, logging.FileHandler)}
    added: list[logging.Handler] = []
    if not any(type(handler) is logging.StreamHandler for handler in ours):
        added.append(logging.StreamHandler())
    if log_file and os.path.abspath(log_file) not in files:
        added.append(logging.handlers.RotatingFileHandler(log_file, maxBytes=10 * MIB, backupCount=5))
    for handler in added:
        setattr(handler, OURS, True)
        root.addHandler(handler)
    for handler in ours + added:
        prepare_handler(handler, log_format)
        # A record a filter lowered below the level (RQ's frequent maintenance lines) stays out.
        handler.setLevel(level)
    # RQ prints its worker lines with handlers of its own, in its own format: use ours instead.
    for name in RQ_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, ColorizingStreamHandler):
                logger.removeHandler(handler)
        logger.propagate = True
    # redis-py's debug lines say nothing an operator needs.
    logging.getLogger("redis").setLevel(logging.WARNING)


def current_request_id() -> str | None:
    """Return the id of the request being handled, or None outside a request."""
    if not has_request_context():
        return None
    request_id: str | None = request.environ.get(REQUEST_ID_ENVIRON)
    return request_id


def read_request_id(header: str | None) -> str:
    """Return the client's X-Request-ID when it looks like an id, else a new one."""
    if header and SANE_REQUEST_ID.fullmatch(header):
        return header
    return os.urandom(16).hex()


class RequestIds:
    """WSGI middleware: give every request an id, for its log lines, and echo it in X-Request-ID.

    Around the app rather than in its hooks: every answer carries the id (a 404, an error,
    rq-dashboard's), for a fraction of what two Flask hooks cost a request.
    """

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Set the id in the environ (for logs and gunicorn's access log) and add it to the answer."""
        request_id = environ[REQUEST_ID_ENVIRON] = read_request_id(environ.get(REQUEST_ID_ENVIRON_HEADER))

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.append((REQUEST_ID_HEADER, request_id))
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


def init_app(app: Flask) -> None:
    """Give every request an id (echoed in X-Request-ID) and, outside tests, configure logging."""
    app.wsgi_app = RequestIds(app.wsgi_app)  # type: ignore[method-assign]
    if app.testing:
        return
    configure(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"], app.config["LOG_FILE"])
