"""The HTTP API: enqueue a registered function, follow its status, fetch its result."""

from __future__ import annotations

import calendar
from collections import Counter
from collections.abc import Iterable
from contextlib import suppress
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from redis.client import Pipeline
from redis.exceptions import RedisError, WatchError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Callback, Dependency, Job, JobStatus, Retry
from rq.registry import ScheduledJobRegistry

from app import __version__, callbacks, idempotency, longpoll, sweeper, web
from app.auth import OWNER_KEY, current_owner
from app.errors import APIError
from app.idempotency import Claim, Replay
from app.jobs.registry import FileData, is_file_json, registry
from app.metrics import count_enqueued
from app.push import push_job
from app.queue import SERIALIZER, get_queue, get_redis
from app.status import ENDED_UNSUCCESSFULLY, Links, describe_job, fetch_job, job_error, scheduled_for
from app.submissions import Submission, in_batch, read_enqueue

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
def enqueue() -> tuple[Response, int] | tuple[Response, int, dict[str, str]]:
    """Queue, schedule or chain a registered function (a JSON array: many); answer 202 with the job."""
    read = read_enqueue(request, current_app.config)
    if isinstance(read, list):
        return enqueue_batch(read)
    submission = read
    key = idempotency.read_key(request)
    claim: Claim | None = None
    if key is not None or submission.job_id is not None:
        fingerprint = idempotency.fingerprint(submission.normalized())
        outcome = idempotency.claim(get_redis(), key, submission.job_id, fingerprint)
        if isinstance(outcome, Replay):
            return replayed(outcome.job_id, submission)
        claim = outcome
    try:
        parents = waiting_parents(submission, parent_statuses(submission.depends_on))
        job = create_job(submission, parents, claim)
    except BaseException:
        # Refused or failed (a 422, Redis gone): the key must not wait for a job that will not be.
        if claim is not None:
            with suppress(RedisError):  # else the claim expires by itself
                claim.release(get_redis())
        raise
    count_enqueued(submission.function.name, submission.queue)
    links = Links()
    body = enqueued(
        job.id, job.get_status(refresh=False), submission, submission.scheduled_for, parents, links
    )
    return jsonify(body), 202, {"Location": body["status_url"]}


def enqueue_batch(submissions: list[Submission]) -> tuple[Response, int]:
    """Create every job of a batch, or none when one is refused; answer 202 with each job, in order.

    Jobs that wait for no other job go in one transaction; each that waits for parents still to
    finish gets its own (RQ watches the parents while it registers the job with them).
    """
    if idempotency.HEADER in request.headers:
        raise APIError(
            422,
            "idempotency_key_not_supported",
            f"{idempotency.HEADER} applies to one job; give each job of a batch its own job_id instead.",
        )
    outcomes = claim_batch(submissions)
    try:
        statuses = parent_statuses([job_id for item in submissions for job_id in item.depends_on])
        parents = []
        for index, (submission, outcome) in enumerate(zip(submissions, outcomes, strict=True)):
            try:
                parents.append([] if isinstance(outcome, Replay) else waiting_parents(submission, statuses))
            except APIError as error:
                raise in_batch(error, index) from None
        jobs = create_jobs(submissions, parents, outcomes)
    except BaseException:
        # A job already created answers a retry all the same: its meta holds its fingerprint.
        release_claims(outcomes)
        raise
    return jsonify(jobs=batch_answers(submissions, outcomes, jobs, parents)), 202


def batch_answers(
    submissions: list[Submission],
    outcomes: list[Claim | Replay | None],
    jobs: list[Job | None],
    parents: list[list[str]],
) -> list[dict[str, Any]]:
    """Return the answer for each job of a batch (a replay's as it is now), and count the new ones."""
    links = Links()
    replayed_ids = [outcome.job_id for outcome in outcomes if isinstance(outcome, Replay)]
    replays = iter(Job.fetch_many(replayed_ids, connection=get_redis(), serializer=SERIALIZER))
    answers = []
    created: Counter[tuple[str, str]] = Counter()
    for submission, outcome, job, waits_for in zip(submissions, outcomes, jobs, parents, strict=True):
        if isinstance(outcome, Replay):
            answers.append(
                {**replay_body(outcome.job_id, next(replays), submission, links), "replayed": True}
            )
            continue
        assert job is not None
        status = job.get_status(refresh=False)
        answers.append(enqueued(job.id, status, submission, submission.scheduled_for, waits_for, links))
        created[submission.function.name, submission.queue] += 1
    for (function, queue), count in created.items():
        count_enqueued(function, queue, count)
    return answers


def release_claims(outcomes: Iterable[Claim | Replay | APIError | None]) -> None:
    """Drop the claims of jobs that will not be created, so that a retry may create them."""
    with suppress(RedisError):  # else they expire by themselves
        for outcome in outcomes:
            if isinstance(outcome, Claim):
                outcome.release(get_redis())


def claim_batch(submissions: list[Submission]) -> list[Claim | Replay | None]:
    """Claim the job_id of each batch item that has one (None for the others), in one round trip."""
    wanted = [
        (index, (None, submission.job_id, idempotency.fingerprint(submission.normalized())))
        for index, submission in enumerate(submissions)
        if submission.job_id is not None
    ]
    outcomes: list[Claim | Replay | None] = [None] * len(submissions)
    if not wanted:
        return outcomes
    results = idempotency.claim_each(get_redis(), [ask for _, ask in wanted])
    for (index, _), result in zip(wanted, results, strict=True):
        if isinstance(result, APIError):
            release_claims(results)
            raise in_batch(result, index)
        outcomes[index] = result
    return outcomes


def parent_statuses(job_ids: list[str]) -> dict[str, JobStatus | None]:
    """Return the status of each job (None for one that does not exist), read in one round trip."""
    unique = list(dict.fromkeys(job_ids))
    if not unique:
        return {}
    with get_redis().pipeline(transaction=False) as pipe:
        for job_id in unique:
            pipe.hget(Job.key_for(job_id), "status")
        replies = pipe.execute()
    return {
        job_id: JobStatus(raw.decode()) if raw else None for job_id, raw in zip(unique, replies, strict=True)
    }


def waiting_parents(submission: Submission, statuses: dict[str, JobStatus | None]) -> list[str]:
    """Return the parents the job waits for; 422 for unknown ones or ones it could never follow."""
    if not submission.depends_on:
        return []
    mine = {job_id: statuses[job_id] for job_id in submission.depends_on}
    unknown = [job_id for job_id, status in mine.items() if status is None]
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
        for job_id, status in mine.items()
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
    return [job_id for job_id, status in mine.items() if status not in done]


def create_job(submission: Submission, parents: list[str], claim: Claim | None) -> Job:
    """Create the job, queued, scheduled or deferred, in one transaction with its claim.

    A job that waits for nothing is one command (app.push); the others, RQ's transaction.
    """
    if not parents and submission.scheduled_for is None:
        job = build_job(submission, parents, claim)
        push_job(get_redis(), get_queue(submission.queue), job, claim, current_app.config["IDEMPOTENCY_TTL"])
        return job
    with get_redis().pipeline() as pipe:
        while True:
            job = build_job(submission, parents, claim)
            try:
                stage_job(pipe, job, submission, claim)
                pipe.execute()
                return job
            except WatchError:
                # A parent's status changed while RQ looked at it (RQ's own WATCH): look again.
                pipe.reset()


def create_jobs(
    submissions: list[Submission], parents: list[list[str]], outcomes: list[Claim | Replay | None]
) -> list[Job | None]:
    """Create a batch's jobs (None for replays): all that wait for no job in one transaction."""
    items = list(zip(submissions, parents, outcomes, strict=True))
    jobs: list[Job | None] = [None] * len(items)
    with get_redis().pipeline() as pipe:
        for index, (submission, waits_for, outcome) in enumerate(items):
            if not waits_for and not isinstance(outcome, Replay):
                jobs[index] = job = build_job(submission, [], outcome)
                stage_job(pipe, job, submission, outcome)
        if pipe.command_stack:
            pipe.execute()
    # RQ WATCHes a job's parents while it registers the job with them: one transaction each.
    for index, (submission, waits_for, outcome) in enumerate(items):
        if waits_for and not isinstance(outcome, Replay):
            jobs[index] = create_job(submission, waits_for, outcome)
    return jobs


def build_job(submission: Submission, parents: list[str], claim: Claim | None) -> Job:
    """Return the job for a submission, with its options, meta and callbacks; nothing is sent yet."""
    function = submission.function
    # base_url lets the job build absolute URLs of this server (url_for(..., _external=True)).
    meta = {"function": function.name, "base_url": f"{request.scheme}://{request.host}/"}
    owner = current_owner()
    if owner is not None:
        meta[OWNER_KEY] = owner
    if claim is not None:
        meta[idempotency.FINGERPRINT_KEY] = claim.fingerprint
    retry = submission.retry
    return get_queue(submission.queue).create_job(
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
        retry=Retry(retry.max, retry.waits(current_app.config["MAX_RETRY_INTERVAL"])) if retry else None,
        on_failure=ON_FAILURE,
        on_stopped=ON_STOPPED,
    )


def stage_job(pipe: Pipeline, job: Job, submission: Submission, claim: Claim | None) -> None:
    """Add what queues, schedules or defers the job to the transaction: tracked, its claim completed."""
    queue = get_queue(submission.queue)
    if submission.scheduled_for is not None:
        schedule_job(pipe, queue, job, submission.scheduled_for)
    else:
        # With parents, RQ WATCHes them here (commands sent at once) before the transaction.
        queue.enqueue_job(job, pipeline=pipe)
    sweeper.track(pipe, job.id)
    if claim is not None:
        claim.complete(pipe, current_app.config["IDEMPOTENCY_TTL"])


def schedule_job(pipe: Pipeline, queue: Queue, job: Job, when: datetime) -> None:
    """Add a scheduled job to the transaction, as Queue.schedule_job does.

    RQ 2.12's ScheduledJobRegistry.schedule() sends its ZADD on the queue's connection, outside
    the pipeline it is given: a round trip of its own, before the job exists.
    """
    pipe.sadd(queue.redis_queues_keys, queue.key)
    job.set_status(JobStatus.SCHEDULED, pipeline=pipe)
    job.save(pipeline=pipe)
    job.cleanup(ttl=job.ttl, pipeline=pipe)
    registry = ScheduledJobRegistry(queue=queue)  # type: ignore[no-untyped-call]
    pipe.zadd(registry.key, {job.id: calendar.timegm(when.utctimetuple())})


def replayed(job_id: str, submission: Submission) -> tuple[Response, int, dict[str, str]]:
    """Answer a repeated request with the job the first one created, as it is now."""
    try:
        job: Job | None = Job.fetch(job_id, connection=get_redis(), serializer=SERIALIZER)
    except NoSuchJobError:
        job = None
    body = replay_body(job_id, job, submission, Links())
    return jsonify(body), 202, {"Location": body["status_url"], idempotency.REPLAYED_HEADER: "true"}


def replay_body(job_id: str, job: Job | None, submission: Submission, links: Links) -> dict[str, Any]:
    """Return the answer for the job an earlier request created (None: no longer kept)."""
    if job is None:
        # Its result_ttl or failure_ttl ran out before the idempotency record did.
        return enqueued(job_id, None, submission, None, [], links)
    status = job.get_status(refresh=False)
    parents = job.dependency_ids if status == JobStatus.DEFERRED else []
    when = scheduled_for(job) if status == JobStatus.SCHEDULED else None
    return enqueued(job.id, status, submission, when, parents, links)


def enqueued(
    job_id: str,
    status: JobStatus | None,
    submission: Submission,
    when: datetime | None,
    parents: list[str],
    links: Links,
) -> dict[str, Any]:
    """Return what the client is told of an accepted job: id, status, schedule or parents, links."""
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
    return {**body, **links.of(job_id)}


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
