"""Logging for web and worker processes, with the job id on every line a job logs."""

from __future__ import annotations

import logging
import logging.handlers

from flask import Flask
from rq import get_current_job

FORMAT = "%(asctime)s %(levelname)s %(name)s [job %(job_id)s] %(message)s"


class JobIdFilter(logging.Filter):
    """Add the running job's id (or '-') to every record as `job_id`."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = get_current_job()
        record.job_id = job.id if job else "-"
        return True


def init_app(app: Flask) -> None:
    """Send log records to the console and, when LOG_FILE is set, to a rotating file."""
    if app.testing:
        return
    root = logging.getLogger()
    root.setLevel(app.config["LOG_LEVEL"])
    # The app may be built more than once in a process: configure the root logger once.
    if any(isinstance(f, JobIdFilter) for handler in root.handlers for f in handler.filters):
        return
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if app.config["LOG_FILE"]:
        handlers.append(
            logging.handlers.RotatingFileHandler(
                app.config["LOG_FILE"], maxBytes=10 * 1024 * 1024, backupCount=5
            )
        )
    for handler in handlers:
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.addFilter(JobIdFilter())
        root.addHandler(handler)
    # RQ prints its worker lines with a handler of its own; do not print them twice.
    logging.getLogger("rq.worker").propagate = False
    # redis-py's debug lines say nothing an operator needs.
    logging.getLogger("redis").setLevel(logging.WARNING)
