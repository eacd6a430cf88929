"""The classic echo job: returns its input with the job's timing after a delay."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import current_app
from rq import get_current_job

from app.jobs.progress import report_progress
from app.jobs.registry import registry

log = logging.getLogger(__name__)


@registry.register()
def some_long_function(some_input: Any) -> dict[str, Any]:
    """Echo the input back with the job's timing, after ECHO_DELAY_SECONDS."""
    delay = float(current_app.config["ECHO_DELAY_SECONDS"])
    steps = max(1, int(delay))
    for step in range(steps):
        report_progress(step, steps, "waiting")
        time.sleep(delay / steps)
    report_progress(steps, steps, "done")
    job = get_current_job()
    log.info("echoed %d bytes of input", len(repr(some_input)))
    return {
        "job_id": job.id if job else None,
        "job_enqueued_at": _iso(job.enqueued_at) if job else None,
        "job_started_at": _iso(job.started_at) if job else None,
        "input": some_input,
        "result": some_input,
    }


def _iso(moment: Any) -> str | None:
    return moment.isoformat() if moment else None
