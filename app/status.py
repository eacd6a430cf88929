"""Jobs as clients see them: fetched by id and described as JSON."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from flask import current_app, url_for
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from app.errors import APIError
from app.jobs.progress import PROGRESS_KEY
from app.queue import SERIALIZER, get_redis

JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
ENDED_UNSUCCESSFULLY = (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)


def fetch_job(job_id: str | None) -> Job:
    """Return the job with this id; 400 for a missing or malformed id, 404 when unknown."""
    if not job_id:
        raise APIError(400, "missing_job_id", "Pass the job id as the job_id query parameter.")
    if not JOB_ID.fullmatch(job_id):
        raise APIError(400, "invalid_job_id", "job_id must be 1-128 letters, digits, '-' or '_'.")
    try:
        return Job.fetch(job_id, connection=get_redis(), serializer=SERIALIZER)
    except NoSuchJobError:
        raise APIError(
            404, "job_not_found", f"No job {job_id}: it never existed or has expired.", job_id=job_id
        ) from None


def job_links(job_id: str) -> dict[str, str]:
    """Return the URLs a client follows for a job."""
    return {
        "status_url": url_for("api.check_status", job_id=job_id, _external=True),
        "result_url": url_for("api.get_result", job_id=job_id, _external=True),
    }


def describe_job(job: Job, status: JobStatus | None = None) -> dict[str, Any]:
    """Return the job's status, timing, progress and (when it failed) its error."""
    status = status or job.get_status(refresh=False)
    body: dict[str, Any] = {
        "job_id": job.id,
        "status": str(status.value) if status else None,
        "function": job.meta.get("function", job.func_name),
        "queue": job.origin,
        "enqueued_at": _iso(job.enqueued_at),
        "started_at": _iso(job.started_at),
        "ended_at": _iso(job.ended_at),
        "progress": job.meta.get(PROGRESS_KEY),
        **job_links(job.id),
    }
    if status in ENDED_UNSUCCESSFULLY:
        body.update(job_error(job, status))
    return body


def job_error(job: Job, status: JobStatus) -> dict[str, str]:
    """Return the short error of a job that did not finish (the traceback when configured)."""
    result = job.latest_result()
    traceback = (result.exc_string if result else None) or ""
    lines = [line for line in traceback.strip().splitlines() if line.strip()]
    if lines:
        error = lines[-1].strip()
    elif status == JobStatus.STOPPED:
        error = "The job was stopped."
    elif status == JobStatus.CANCELED:
        error = "The job was canceled."
    else:
        error = "The job failed."
    details = {"error": error}
    if traceback and current_app.config["EXPOSE_TRACEBACKS"]:
        details["traceback"] = traceback
    return details


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
