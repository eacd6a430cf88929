"""The HTTP API: enqueue a registered function, follow its status, fetch its result."""

from __future__ import annotations

from contextlib import suppress
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from redis.exceptions import RedisError, WatchError
from rq.exceptions import NoSuchJobError
from rq.job import Callback, Dependency, Job, JobStatus, Retry

from app import __version__, callbacks, idempotency, longpoll, sweeper, web
from app.auth import OWNER_KEY, current_owner
from app.errors import APIError
from app.idempotency import Claim, Replay
from app.jobs.registry import FileData, is_file_json, registry
from app.queue import SERIALIZER, get_queue, get_redis
from app.status import ENDED_UNSUCCESSFULLY, describe_job, fetch_job, job_error, job_links, scheduled_for
from app.submissions import Submission, read_submission

bp = Blueprint("api", __name__)

# Every job gets both: RQ keeps no error of a try it retries, and leaves the dependents of a
# failed or stopped job deferred for ever.
ON_FAILURE = Callback(callbacks.on_failure)
ON_STOPPED = Callback(callbacks.on_stopped)


@bp.get("/")
def index() -> Response:
    """Return the service's name, version and routes; a browser asking for HTML gets the page."""
    response = web.page() if web.wants_page() else index_json()
    # One URL, two representations: caches must key on Accept.
    response.vary.add("Accept")
    return response


def index_json() -> Response:
    """Return the service's name, version and the routes a client uses."""
    return jsonify(
        service=current_app.config["SERVICE_NAME"],
        version=__version__,
        links={
            "enqueue": url_for("api.enqueue", _external=True),
            "check_status": url_for("api.check_status", _external=True) + "?job_id={job_id}",
            "get_result": url_for("api.get_result", _external=True) + "?job_id={job_id}",
            "functions": url_for("api.functions", _external=True),
            "jobs": url_for("listing.list_jobs", _external=True),
            "queues": url_for("monitor.queues", _external=True),
            "workers": url_for("monitor.workers", _external=True),
            "dashboard": url_for("api.index", _external=True) + "rq"
            if current_app.config["DASHBOARD_ENABLED"]
            else None,
        },
    )


@bp.get("/functions")
def functions() -> Response:
    """List the registered functions with their parameters and one-line docs."""
    return jsonify(functions=[function.describe() for function in registry])


@bp.post("/enqueue")
def enqueue() -> tuple[Response, int, dict[str, str]]:
    """Queue, schedule or chain a registered function; answer 202 with the job id."""
    submission = read_submission(request, current_app.config)
    key = idempotency.read_key(request)
    claim: Claim | None = None
    if key is not None or submission.job_id is not None:
        fingerprint = idempotency.fingerprint(submission.normalized())
        outcome = idempotency.claim(get_redis(), key, submission.job_id, fingerprint)
        if isinstance(outcome, Replay):
            return replayed(outcome.job_id, submission)
        claim = outcome
    try:
        parents = waiting_parents(submission)
        job = create_job(submission, parents, claim)
    except BaseException:
        # Refused or failed (a 422, Redis gone): the key must not wait for a job that will not be.
        if claim is not None:
            with suppress(RedisError):  # else the claim expires by itself
                claim.release(get_redis())
        raise
    status = job.get_status(refresh=False)
    return accepted(job.id, status, submission, submission.scheduled_for, parents)


def waiting_parents(submission: Submission) -> list[str]:
    """Return the parents the job waits for; 422 for unknown ones or ones it could never follow."""
    if not submission.depends_on:
        return []
    with get_redis().pipeline(transaction=False) as pipe:
        for job_id in submission.depends_on:
            pipe.hget(Job.key_for(job_id), "status")
        replies = pipe.execute()
    statuses = {
        job_id: JobStatus(raw.decode()) if raw else None
        for job_id, raw in zip(submission.depends_on, replies, strict=True)
    }
    unknown = [job_id for job_id, status in statuses.items() if status is None]
    if unknown:
        raise APIError(
            422,
            "unknown_dependency",
            f"No job {', '.join(unknown)} to depend on: it never existed or has expired.",
            job_ids=unknown,
        )
    done = {JobStatus.FINISHED, JobStatus.FAILED} if submission.allow_failure else {JobStatus.FINISHED}
    never = {
        job_id: status
        for job_id, status in statuses.items()
        if status is not None and status in ENDED_UNSUCCESSFULLY and status not in done
    }
    if never:
        endings = ", ".join(f"{job_id} {status.value}" for job_id, status in never.items())
        raise APIError(
            422,
            "dependency_failed",
            f"Job {endings}: this job would never run (allow_failure: true runs it after a failure).",
            job_ids=list(never),
        )
    # RQ defers a job on any parent that has not finished, even a failed one it is allowed to
    # follow, and nothing would enqueue it then: only parents still to come are passed on.
    return [job_id for job_id, status in statuses.items() if status not in done]


def create_job(submission: Submission, parents: list[str], claim: Claim | None) -> Job:
    """Create the job, queued, scheduled or deferred, in one transaction with its claim."""
    config = current_app.config
    queue = get_queue(submission.queue)
    function = submission.function
    # base_url lets the job build absolute URLs of this server (url_for(..., _external=True)).
    meta = {"function": function.name, "base_url": request.host_url}
    owner = current_owner()
    if owner is not None:
        meta[OWNER_KEY] = owner
    if claim is not None:
        meta[idempotency.FINGERPRINT_KEY] = claim.fingerprint
    retry = submission.retry
    with get_redis().pipeline() as pipe:
        while True:
            job = queue.create_job(
                function.func,
                args=submission.args,
                kwargs=submission.kwargs,
                timeout=submission.timeout,
                result_ttl=submission.result_ttl,
                ttl=submission.ttl,
                failure_ttl=submission.failure_ttl,
                description=function.name,
                depends_on=Dependency(parents, allow_failure=submission.allow_failure) if parents else None,
                job_id=claim.job_id if claim else None,
                meta=meta,
                retry=Retry(retry.max, retry.waits(config["MAX_RETRY_INTERVAL"])) if retry else None,
                on_failure=ON_FAILURE,
                on_stopped=ON_STOPPED,
            )
            try:
                if submission.scheduled_for is not None:
                    queue.schedule_job(job, submission.scheduled_for, pipeline=pipe)
                else:
                    queue.enqueue_job(job, pipeline=pipe)
                sweeper.track(pipe, job.id)
                if claim is not None:
                    claim.complete(pipe, config["IDEMPOTENCY_TTL"])
                pipe.execute()
                return job
            except WatchError:
                # A parent's status changed while RQ looked at it (RQ's own WATCH): look again.
                pipe.reset()


def replayed(job_id: str, submission: Submission) -> tuple[Response, int, dict[str, str]]:
    """Answer a repeated request with the job the first one created, as it is now."""
    try:
        job = Job.fetch(job_id, connection=get_redis(), serializer=SERIALIZER)
    except NoSuchJobError:
        # Its result_ttl or failure_ttl ran out before the idempotency record did.
        body, code, headers = accepted(job_id, None, submission, None, [])
    else:
        status = job.get_status(refresh=False)
        parents = job.dependency_ids if status == JobStatus.DEFERRED else []
        when = scheduled_for(job) if status == JobStatus.SCHEDULED else None
        body, code, headers = accepted(job.id, status, submission, when, parents)
    return body, code, {**headers, idempotency.REPLAYED_HEADER: "true"}


def accepted(
    job_id: str,
    status: JobStatus | None,
    submission: Submission,
    when: datetime | None,
    parents: list[str],
) -> tuple[Response, int, dict[str, str]]:
    """Return the 202 answer for a job: its id, status, schedule or parents, and links."""
    links = job_links(job_id)
    body: dict[str, Any] = {
        "job_id": job_id,
        "status": status.value if status else "expired",
        "function": submission.function.name,
        "queue": submission.queue,
    }
    if status == JobStatus.SCHEDULED and when is not None:
        body["scheduled_for"] = when.isoformat()
    if status == JobStatus.DEFERRED:
        body["depends_on"] = sorted(parents)
    return jsonify({**body, **links}), 202, {"Location": links["status_url"]}


@bp.get("/check_status")
def check_status() -> Response:
    """Return the job's status, timing, progress and error; ?wait= holds it until one changes."""
    wait = longpoll.read_wait()
    job = fetch_job(request.args.get("job_id"))
    if wait:
        longpoll.wait_for_change(job, wait)
        job = fetch_job(job.id)
    return jsonify(describe_job(job))


@bp.get("/get_result")
def get_result() -> Response | tuple[Response, int, dict[str, str]]:
    """Return the job's result; 202 while it runs, 409 when it failed or was stopped.

    ?wait= holds the answer until the job ends, for at most that many seconds.
    """
    wait = longpoll.read_wait()
    job = fetch_job(request.args.get("job_id"))
    if wait:
        longpoll.wait_for_end(job, wait)
        job = fetch_job(job.id)
    status = job.get_status(refresh=False)  # fetch_job just read it
    if status == JobStatus.FINISHED:
        return result_response(job.id, job.return_value())
    if status in ENDED_UNSUCCESSFULLY:
        details = job_error(job, status)
        raise APIError(
            409,
            f"job_{status.value}",
            f"Job {job.id} {status.value}: {details['error']}",
            job_id=job.id,
            job_status=status.value,
            **details,
        )
    retry_after = str(current_app.config["RETRY_AFTER_SECONDS"])
    return jsonify(describe_job(job, status)), 202, {"Retry-After": retry_after}


def result_response(job_id: str, result: Any) -> Response:
    """Serve a file result with its own content type, anything else as JSON."""
    if is_file_json(result):
        file = FileData.from_json(result)
        response = Response(file.data, content_type=file.content_type)
        response.headers["Content-Disposition"] = f'inline; filename="{file.filename}"'
        response.headers["X-Content-Type-Options"] = "nosniff"
        # A result page may show text a client sent: it runs no script and loads nothing.
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
        )
        return response
    return jsonify(job_id=job_id, status=JobStatus.FINISHED.value, result=result)
