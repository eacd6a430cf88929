"""Job control: show, cancel or stop, requeue and delete one job at /jobs/<id>."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from flask import Blueprint, Response, current_app, jsonify, url_for
from redis.client import Pipeline
from redis.exceptions import WatchError
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import (
    BaseRegistry,
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
)
from rq.results import Result
from rq.utils import as_text

from app import sweeper
from app.callbacks import cancel_dependents
from app.errors import APIError
from app.jobs.progress import PROGRESS_KEY
from app.queue import SERIALIZER, get_redis
from app.status import CANCELED_BECAUSE_KEY, describe_job, fetch_job, job_links

bp = Blueprint("control", __name__)

ENDED = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)
REQUEUEABLE = (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)
# Registries a job that is not running may sit in (the started one holds running jobs only).
RESTING_REGISTRIES: tuple[type[BaseRegistry], ...] = (
    DeferredJobRegistry,
    ScheduledJobRegistry,
    FinishedJobRegistry,
    FailedJobRegistry,
    CanceledJobRegistry,
)
POLL_SECONDS = 0.1
# A job changes under us when a worker takes it meanwhile: decide again, a few times at most.
ATTEMPTS = 3

ResponseWithStatus = tuple[Response, int, dict[str, str]]


@bp.get("/jobs/<job_id>")
def show_job(job_id: str) -> Response:
    """Return the job's status body, the same as /check_status."""
    return jsonify(describe_job(fetch_job(job_id)))


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Response | ResponseWithStatus:
    """Cancel a waiting job or stop a running one; answer with the state it reached."""
    for _ in range(ATTEMPTS):
        job = fetch_job(job_id)
        status = job.get_status(refresh=False)
        if status in ENDED:
            raise APIError(
                409,
                "job_already_ended",
                f"Job {job_id} already ended ({status.value}): there is nothing to cancel.",
                job_id=job_id,
                job_status=status.value,
            )
        if status == JobStatus.STARTED:
            return _stop(job)
        # job.cancel() does not look at the status: do it only if no worker took the job meanwhile.
        if _unless_changed(job, status, partial(_cancel, job)):
            # RQ would leave the jobs that wait on this one deferred for ever.
            cancel_dependents(job, "was canceled", spare_allowed=False)
            return jsonify(describe_job(fetch_job(job_id)))
    raise _busy(job_id)


@bp.post("/jobs/<job_id>/requeue")
def requeue_job(job_id: str) -> ResponseWithStatus:
    """Put a failed, stopped or canceled job back on its queue; answer 202 as /enqueue does."""
    job = fetch_job(job_id)
    status = job.get_status(refresh=False)
    if status not in REQUEUEABLE:
        raise _not_requeueable(job_id, status)
    connection = get_redis()
    registry = (
        CanceledJobRegistry(job.origin, connection=connection, serializer=SERIALIZER)
        if status == JobStatus.CANCELED
        else job.failed_job_registry
    )
    # The last run's progress (or why it was canceled) would read as this run's.
    job.meta.pop(PROGRESS_KEY, None)
    job.meta.pop(CANCELED_BECAUSE_KEY, None)
    try:
        job = registry.requeue(job)
    except InvalidJobOperation:
        # Not in its registry any more: requeued by someone else first.
        raise _not_requeueable(job_id, fetch_job(job_id).get_status(refresh=False)) from None
    sweeper.track(connection, job.id)
    links = job_links(job.id)
    return jsonify(describe_job(job)), 202, {"Location": links["status_url"]}


@bp.delete("/jobs/<job_id>")
def delete_job(job_id: str) -> Response:
    """Delete a job that is not running, with its results; 409 while it runs."""
    for _ in range(ATTEMPTS):
        job = fetch_job(job_id)
        status = job.get_status(refresh=False)
        if status == JobStatus.STARTED:
            cancel_url = url_for("control.cancel_job", job_id=job_id, _external=True)
            raise APIError(
                409,
                "job_running",
                f"Job {job_id} is running: cancel it first (POST {cancel_url}), then delete it.",
                job_id=job_id,
                job_status=status.value,
                cancel_url=cancel_url,
            )
        if _unless_changed(job, status, partial(_delete, job)):
            return jsonify(job_id=job_id, deleted=True, job_status=status.value)
    raise _busy(job_id)


def _stop(job: Job) -> Response | ResponseWithStatus:
    """Ask the job's worker to stop it; wait a bounded time for the worker to mark it stopped."""
    if not job.worker_name:
        raise APIError(
            409,
            "job_not_running",
            f"Job {job.id} is marked started but no worker runs it; it fails once its heartbeat expires.",
            job_id=job.id,
            job_status=JobStatus.STARTED.value,
        )
    try:
        send_stop_job_command(get_redis(), job.id, serializer=SERIALIZER)
    except NoSuchJobError:
        # Deleted since we read it.
        raise APIError(
            404, "job_not_found", f"No job {job.id}: it never existed or has expired.", job_id=job.id
        ) from None
    _wait_while_started(job, current_app.config["CANCEL_WAIT_SECONDS"])
    job = fetch_job(job.id)
    status = job.get_status(refresh=False)
    body = jsonify(describe_job(job, status))
    if status in ENDED:
        return body
    return body, 202, {"Retry-After": str(current_app.config["RETRY_AFTER_SECONDS"])}


def _wait_while_started(job: Job, timeout: float) -> None:
    """Return once the job is no longer started (or gone), or after `timeout` seconds."""
    connection = get_redis()
    deadline = time.monotonic() + timeout
    while True:
        status = connection.hget(job.key, "status")
        remaining = deadline - time.monotonic()
        if status is None or as_text(status) != JobStatus.STARTED.value or remaining <= 0:
            return
        time.sleep(min(POLL_SECONDS, remaining))


def _unless_changed(job: Job, status: JobStatus, change: Callable[[Pipeline], object]) -> bool:
    """Apply `change` in one transaction if the job still has `status`; tell whether it did."""
    with get_redis().pipeline() as pipe:
        try:
            pipe.watch(job.key)  # type: ignore[no-untyped-call]
            current = pipe.hget(job.key, "status")
            if current is None or as_text(current) != status.value:
                return False
            pipe.multi()
            change(pipe)
            pipe.execute()
        except WatchError:
            return False
    return True


def _cancel(job: Job, pipe: Pipeline) -> None:
    """Queue the cancellation of the job on the pipeline."""
    job.cancel(pipeline=pipe)


def _delete(job: Job, pipe: Pipeline) -> None:
    """Queue the deletion of the job, its results and every registry entry on the pipeline."""
    job.delete(pipeline=pipe)
    pipe.delete(Result.get_key(job.id))  # type: ignore[no-untyped-call]
    # RQ removes the job from the registry its status names only; a stale entry elsewhere goes too.
    connection = get_redis()
    for registry in RESTING_REGISTRIES:
        pipe.zrem(registry(job.origin, connection=connection).key, job.id)


def _not_requeueable(job_id: str, status: JobStatus) -> APIError:
    return APIError(
        409,
        "job_not_requeueable",
        f"Job {job_id} is {status.value}: only failed, stopped or canceled jobs can be requeued.",
        job_id=job_id,
        job_status=status.value,
        requeueable=[status.value for status in REQUEUEABLE],
    )


def _busy(job_id: str) -> APIError:
    return APIError(409, "job_busy", f"Job {job_id} kept changing state; try again.", job_id=job_id)
