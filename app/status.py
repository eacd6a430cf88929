"""Jobs as clients see them: fetched by id and described as JSON."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from flask import current_app, request
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry

from app.auth import OWNER_KEY, restricted_owner
from app.errors import APIError
from app.jobs.progress import PROGRESS_KEY
from app.queue import SERIALIZER, get_redis

JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
ENDED_UNSUCCESSFULLY = (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)
# Job meta written by app.callbacks: RQ 2.12 keeps no record of a try it retries, nor of why
# it canceled a job.
LAST_ERROR_KEY = "last_error"
CANCELED_BECAUSE_KEY = "canceled_because"


def fetch_job(job_id: str | None) -> Job:
    """Return the job with this id; 400 for a missing or malformed id, 404 when unknown."""
    if not job_id:
        raise APIError(400, "missing_job_id", "Pass the job id as the job_id query parameter.")
    if not JOB_ID.fullmatch(job_id):
        raise APIError(400, "invalid_job_id", "job_id must be 1-128 letters, digits, '-' or '_'.")
    try:
        job = Job.fetch(job_id, connection=get_redis(), serializer=SERIALIZER)
    except NoSuchJobError:
        job = None
    owner = restricted_owner()
    # Another key's job answers like a missing one: a key must not learn which ids exist.
    if job is None or (owner is not None and job.meta.get(OWNER_KEY) != owner):
        raise APIError(
            404, "job_not_found", f"No job {job_id}: it never existed or has expired.", job_id=job_id
        )
    return job


def job_links(job_id: str) -> dict[str, str]:
    """Return the URLs a client follows for a job (Links, for many jobs of one request)."""
    return Links().of(job_id)


class Links:
    """The URLs of jobs in this request, what url_for(..., _external=True) gives, for less.

    From the request's scheme, host and script root and the routes' rules: url_for does the
    same for routes without arguments in several times the time (a third of an enqueue's own
    work). Built once a request, not per job.
    """

    def __init__(self) -> None:
        root = f"{request.scheme}://{request.host}{request.script_root}"
        rules = current_app.url_map
        # Job ids are letters, digits, '-' and '_' (JOB_ID): nothing a query escapes.
        self.status = root + next(rules.iter_rules("api.check_status")).rule + "?job_id="
        self.result = root + next(rules.iter_rules("api.get_result")).rule + "?job_id="

    def of(self, job_id: str) -> dict[str, str]:
        """Return the status and result URLs of a job."""
        return {"status_url": self.status + job_id, "result_url": self.result + job_id}


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
        "attempt": attempt(job),
        "last_error": job.meta.get(LAST_ERROR_KEY),
        **job_links(job.id),
    }
    if status == JobStatus.SCHEDULED:
        body["scheduled_for"] = _iso(scheduled_for(job))
    elif status == JobStatus.DEFERRED:
        body["depends_on"] = sorted(job.dependency_ids)
    elif status in ENDED_UNSUCCESSFULLY:
        body.update(job_error(job, status))
    return body


def attempt(job: Job) -> int:
    """Return the 1-based number of the job's current (or last) try."""
    if job.retries_left is None or not job.retry_intervals:
        return 1
    # RQ counts retries down, not tries up; this server gives it one interval per retry
    # (RetryPolicy.waits), so the list's length is the retry policy's max.
    return len(job.retry_intervals) - job.retries_left + 1


def scheduled_for(job: Job) -> datetime | None:
    """Return when a scheduled job (or retry) is due; None once it is no longer scheduled."""
    registry = ScheduledJobRegistry(job.origin, connection=job.connection, serializer=job.serializer)  # type: ignore[no-untyped-call]
    try:
        return registry.get_scheduled_time(job)
    except NoSuchJobError:
        return None


def job_error(job: Job, status: JobStatus) -> dict[str, str]:
    """Return the short error of a job that did not finish (the traceback when configured)."""
    result = job.latest_result()
    traceback = (result.exc_string if result else None) or ""
    lines = [line for line in traceback.strip().splitlines() if line.strip()]
    if lines:
        error = short_error(lines[-1])
    elif status == JobStatus.STOPPED:
        error = "The job was stopped."
    elif status == JobStatus.CANCELED:
        error = job.meta.get(CANCELED_BECAUSE_KEY) or "The job was canceled."
    else:
        error = "The job failed."
    details = {"error": error}
    if traceback and current_app.config["EXPOSE_TRACEBACKS"]:
        details["traceback"] = traceback
    return details


def short_error(line: str) -> str:
    """Return a traceback's last line as 'Type: message', without the type's module."""
    name, colon, message = line.strip().partition(": ")
    # "rq.timeouts.JobTimeoutException: ..." reads "JobTimeoutException: ..."; a line that is
    # not "Type: message" (a worker's own note) stays as it is.
    if all(part.isidentifier() for part in name.split(".")):
        name = name.rpartition(".")[2]
    return f"{name}{colon}{message}"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
