"""flask commands: enqueue a registered function, show a job, list queues and workers, requeue.

flask --app app jobs enqueue count --kwargs '{"duration": 3}' --wait
flask --app app jobs show 5b0e6c8e-...
flask --app app jobs queues
flask --app app jobs workers
flask --app app jobs requeue-failed --queue default
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import click
from flask import Flask, current_app, request
from flask.cli import AppGroup
from redis.exceptions import RedisError
from rq import Worker
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Callback, Job, JobStatus, Retry

from app import callbacks, sweeper
from app.errors import APIError
from app.jobs.progress import PROGRESS_KEY
from app.jobs.registry import FileData, is_file_json
from app.monitor import describe_queues, describe_worker
from app.queue import SERIALIZER, get_queue, get_redis
from app.status import CANCELED_BECAUSE_KEY, ENDED_UNSUCCESSFULLY, describe_job, fetch_job, job_error
from app.submissions import Submission, read_submission

P = ParamSpec("P")
R = TypeVar("R")

# Seconds between two looks at a job followed with --wait.
POLL_SECONDS = 0.5
ENDED = (JobStatus.FINISHED, *ENDED_UNSUCCESSFULLY)

jobs = AppGroup("jobs", help="Enqueue and inspect jobs, queues and workers.")


def init_app(app: Flask) -> None:
    """Register the command-line commands."""
    app.cli.add_command(jobs)


def friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the API's refusals and an unreachable Redis into a one-line error and exit status 1."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except APIError as error:
            message = error.description or error.error_code
            if "available" in error.details:
                message += f" Available: {', '.join(error.details['available'])}."
            raise click.ClickException(message) from None
        except RedisError as error:
            raise click.ClickException(f"Redis does not answer: {error}") from None

    return run


@jobs.command("enqueue")
@click.argument("function")
@click.option(
    "--arg",
    "args",
    multiple=True,
    metavar="JSON",
    help="""A positional argument as JSON; repeat for more: --arg 5 --arg '"text"'.""",
)
@click.option("--kwargs", metavar="JSON", help="""Keyword arguments, a JSON object: '{"duration": 3}'.""")
@click.option("--queue", help="A queue of QUEUES (default: the function's own, else DEFAULT_QUEUE).")
@click.option("--wait", is_flag=True, help="Show the job's progress until it ends, then print its result.")
@friendly_errors
def enqueue(function: str, args: Sequence[str], kwargs: str | None, queue: str | None, wait: bool) -> None:
    """Enqueue a registered FUNCTION, checked as POST /enqueue checks it."""
    body: dict[str, Any] = {"function": function, "args": [read_json("--arg", arg) for arg in args]}
    if kwargs is not None:
        body["kwargs"] = read_json("--kwargs", kwargs)
    if queue is not None:
        body["queue"] = queue
    submission = check_submission(body)
    job = create_job(submission)
    click.echo(f"Enqueued job {job.id}: {submission.function.name} on queue {submission.queue}")
    if wait:
        click.get_current_context().exit(follow(job))


def read_json(option: str, text: str) -> Any:
    """Parse an option's JSON value; a usage error says which option was wrong."""
    try:
        return json.loads(text)
    except ValueError as error:
        raise click.BadParameter(
            f"{text!r} is not JSON ({error}); quote strings: '\"text\"'", param_hint=option
        ) from None


def check_submission(body: dict[str, Any]) -> Submission:
    """Check a JSON body exactly as POST /enqueue does; raise APIError as it would."""
    with current_app.test_request_context(json=body):
        return read_submission(request, current_app.config)


def create_job(submission: Submission) -> Job:
    """Queue the job with the callbacks every job of the server has."""
    retry = submission.retry
    job = get_queue(submission.queue).enqueue_call(
        func=submission.function.func,
        args=submission.args,
        kwargs=submission.kwargs,
        timeout=submission.timeout,
        result_ttl=submission.result_ttl,
        failure_ttl=submission.failure_ttl,
        description=submission.function.name,
        # No base_url: like a periodic job, it has no server URL to build links with.
        meta={"function": submission.function.name},
        retry=Retry(retry.max, retry.waits(current_app.config["MAX_RETRY_INTERVAL"])) if retry else None,
        on_failure=Callback(callbacks.on_failure),
        on_stopped=Callback(callbacks.on_stopped),
    )
    # Watched like jobs from /enqueue, so a worker dying as it takes the job cannot lose it.
    sweeper.track(get_redis(), job.id)
    return job


def follow(job: Job, poll: float = POLL_SECONDS) -> int:
    """Show the job's progress until it ends; print its result or error; return the exit status."""
    shown = 0
    try:
        with click.progressbar(length=100, label=f"Job {job.id}", show_eta=False) as bar:
            while True:
                status = job.get_status(refresh=True)
                progress = job.get_meta(refresh=True).get(PROGRESS_KEY) or {}
                percent = 100 if status == JobStatus.FINISHED else int(progress.get("percent") or 0)
                if percent > shown:
                    bar.update(percent - shown)
                    shown = percent
                if status in ENDED:
                    break
                time.sleep(poll)
    except InvalidJobOperation:
        raise click.ClickException(f"Job {job.id} is gone: it expired or was deleted.") from None
    except KeyboardInterrupt:
        raise click.ClickException(
            f"Stopped waiting; job {job.id} goes on (flask jobs show {job.id})."
        ) from None
    if status == JobStatus.FINISHED:
        click.echo(format_result(job.return_value(refresh=True)))
        return 0
    click.echo(f"Job {job.id} {status.value}: {job_error(job, status)['error']}", err=True)
    return 1


def format_result(result: Any) -> str:
    """Return a job's result as JSON; a file as its name, type and size."""
    if is_file_json(result):
        file = FileData.from_json(result)
        return f"<file {file.filename}: {file.content_type}, {len(file.data)} bytes>"
    return json.dumps(result, indent=2, ensure_ascii=False)


@jobs.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@friendly_errors
def show(job_id: str, as_json: bool) -> None:
    """Show a job: status, timing, progress, error or result."""
    job = fetch_job(job_id)
    # describe_job adds the job's URLs, which need a request; a terminal has none to give.
    with current_app.test_request_context():
        body = describe_job(job)
    body.pop("status_url", None)
    body.pop("result_url", None)
    if body["status"] == JobStatus.FINISHED.value:
        result = job.return_value()
        body["result"] = format_result(result) if is_file_json(result) else result
    if as_json:
        click.echo(json.dumps(body, indent=2, ensure_ascii=False))
        return
    width = max(map(len, body))
    for key, value in body.items():
        if isinstance(value, dict | list):
            value = json.dumps(value, ensure_ascii=False)
        click.echo(f"{key:<{width}}  {'-' if value is None else value}")


@jobs.command("queues")
@click.option("--json", "as_json", is_flag=True, help="Print the queues as JSON.")
@friendly_errors
def queues(as_json: bool) -> None:
    """List the queues: waiting jobs, the oldest one's age, and each registry's size."""
    rows = describe_queues([get_queue(name) for name in current_app.config["QUEUES"]])
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    registries = list(rows[0]["registries"]) if rows else []
    header = ["queue", "queued", "oldest", *registries]
    lines = [
        [
            row["name"],
            str(row["length"]),
            f"{row['oldest_job_age']:.0f}s" if row["oldest_job_age"] is not None else "-",
            *(str(row["registries"][name]) for name in registries),
        ]
        for row in rows
    ]
    click.echo(table(header, lines))


@jobs.command("workers")
@click.option("--json", "as_json", is_flag=True, help="Print the workers as JSON.")
@friendly_errors
def workers(as_json: bool) -> None:
    """List the workers: state, queues, current job, last heartbeat and job counts."""
    found = sorted(Worker.all(connection=get_redis(), serializer=SERIALIZER), key=lambda worker: worker.name)
    rows = [describe_worker(worker) for worker in found]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("No workers: start some with ./worker.sh")
        return
    header = ["name", "state", "queues", "job", "last heartbeat", "finished", "failed"]
    lines = [
        [
            row["name"],
            row["state"],
            ",".join(row["queues"]),
            row["current_job_id"] or "-",
            row["last_heartbeat"] or "-",
            str(row["successful_job_count"]),
            str(row["failed_job_count"]),
        ]
        for row in rows
    ]
    click.echo(table(header, lines))


@jobs.command("requeue-failed")
@click.option("--queue", help="Only this queue (default: every queue of QUEUES).")
@friendly_errors
def requeue_failed(queue: str | None) -> None:
    """Put every failed (and stopped) job back on its queue, as POST /jobs/<id>/requeue does."""
    names = list(current_app.config["QUEUES"])
    if queue is not None and queue not in names:
        raise click.BadParameter(f"{queue!r} is not one of {', '.join(names)}", param_hint="--queue")
    total = 0
    for name in [queue] if queue else names:
        registry = get_queue(name).failed_job_registry
        requeued = []
        for job in Job.fetch_many(registry.get_job_ids(), connection=get_redis(), serializer=SERIALIZER):
            if job is None:
                continue  # expired meanwhile
            # The last run's progress (or why it was canceled) would read as this run's.
            job.meta.pop(PROGRESS_KEY, None)
            job.meta.pop(CANCELED_BECAUSE_KEY, None)
            try:
                registry.requeue(job)
            except (InvalidJobOperation, NoSuchJobError):
                continue  # requeued or deleted by someone else first
            requeued.append(job.id)
        if requeued:
            click.echo(f"{name}: requeued {len(requeued)} job(s): {', '.join(requeued)}")
        total += len(requeued)
    click.echo(f"Requeued {total} job(s).")


def table(header: list[str], rows: list[list[str]]) -> str:
    """Return rows as a plain text table under an upper-case header."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [[cell.upper() for cell in header], *rows]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
