"""Job callbacks: keep the error of a try RQ retries; cancel what waits on a job that cannot finish."""

from __future__ import annotations

import logging
import traceback
from types import TracebackType
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq.job import Job, JobStatus
from rq.utils import as_text

from app.status import CANCELED_BECAUSE_KEY, LAST_ERROR_KEY, short_error

log = logging.getLogger(__name__)


def on_failure(
    job: Job,
    connection: Redis,
    exc_type: type[BaseException],
    exc_value: BaseException,
    tb: TracebackType | Any,
) -> None:
    """Note the error of a try that will be retried; cancel the dependents of a final failure."""
    # RQ runs this before it decides: retries_left still counts the retry about to happen.
    try:
        if job.should_retry:
            lines = traceback.format_exception_only(exc_type, exc_value)
            job.meta[LAST_ERROR_KEY] = short_error(lines[-1])
            job.save_meta()  # type: ignore[no-untyped-call]
        else:
            cancel_dependents(job, "failed", spare_allowed=True)
    except RedisError:
        # Raising here would replace the job's own error with this one.
        log.exception("Job %s: could not record its failure", job.id)


def on_stopped(job: Job, connection: Redis) -> None:
    """Cancel the dependents of a stopped job: RQ would leave them deferred for ever."""
    try:
        cancel_dependents(job, "was stopped", spare_allowed=False)
    except RedisError:
        log.exception("Job %s: could not cancel its dependents", job.id)


def cancel_dependents(parent: Job, outcome: str, *, spare_allowed: bool) -> list[str]:
    """Cancel the deferred jobs that wait on `parent`, then those that wait on them; return their ids.

    RQ leaves them deferred: a failed parent is a dependency never met, unless the dependent
    allows failure (`spare_allowed`: RQ enqueues those itself). A canceled job is never met.
    """
    canceled: list[str] = []
    waiting = [(parent, outcome)]
    while waiting:
        job, how = waiting.pop()
        ids = [as_text(member) for member in job.connection.smembers(job.dependents_key)]
        for child in Job.fetch_many(ids, connection=job.connection, serializer=job.serializer):
            if child is None or child.get_status(refresh=False) != JobStatus.DEFERRED:
                continue
            if spare_allowed and job is parent and child.allow_dependency_failures:
                continue
            child.meta[CANCELED_BECAUSE_KEY] = f"Canceled: job {job.id}, which it depends on, {how}."
            child.save_meta()  # type: ignore[no-untyped-call]
            child.cancel()
            canceled.append(child.id)
            waiting.append((child, "was canceled"))
    if canceled:
        log.info("Job %s %s: canceled its dependents %s", parent.id, outcome, ", ".join(canceled))
    return canceled
