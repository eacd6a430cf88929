"""What a client posts to /enqueue, read and checked before anything is queued."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Request
from werkzeug.utils import secure_filename

from app.errors import APIError
from app.jobs.registry import ArgumentsError, FileData, JobFunction, UnknownFunction, registry
from app.retry import RetryPolicy
from app.status import JOB_ID

BODY_KEYS = {
    "function",
    "args",
    "kwargs",
    "queue",
    "timeout",
    "result_ttl",
    "ttl",
    "failure_ttl",
    "retry",
    "delay",
    "at",
    "depends_on",
    "allow_failure",
    "job_id",
}
# A client's clock may run a little behind ours: an `at` this far in the past means "now".
PAST_TOLERANCE = timedelta(seconds=5)


@dataclass
class Submission:
    """A checked request to run a registered function."""

    function: JobFunction
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    timeout: int = 600
    result_ttl: int = 86400
    ttl: int | None = None
    failure_ttl: int = 7 * 86400
    retry: RetryPolicy | None = None
    delay: float | None = None
    at: datetime | None = None
    # When the job is due, in whole seconds (RQ's scheduler has no finer resolution); None: now.
    scheduled_for: datetime | None = None
    depends_on: list[str] = field(default_factory=list)
    allow_failure: bool = False
    job_id: str | None = None

    def normalized(self) -> dict[str, Any]:
        """Return the request as JSON with the defaults filled in: equal requests, equal JSON."""
        return {
            "function": self.function.name,
            "args": self.args,
            "kwargs": self.kwargs,
            "queue": self.queue,
            "timeout": self.timeout,
            "result_ttl": self.result_ttl,
            "ttl": self.ttl,
            "failure_ttl": self.failure_ttl,
            "retry": self.retry.to_json() if self.retry else None,
            "delay": self.delay,
            "at": self.at.astimezone(UTC).isoformat() if self.at else None,
            "depends_on": self.depends_on,
            "allow_failure": self.allow_failure,
            "job_id": self.job_id,
        }


def read_enqueue(request: Request, config: dict[str, Any]) -> Submission | list[Submission]:
    """Read a POST /enqueue body: one Submission, or a list of them for a batch.

    Raise APIError when it is not valid; for a batch, the first invalid item's error, with its
    `index`.
    """
    if request.is_json:
        body = _json_body(request)
        if isinstance(body, dict) and "function" in body:
            return _from_fields(body, config)
        if is_batch(body):
            return _batch(body, config)
        # The seed format: any other JSON body goes whole to the default function.
        return _from_fields({"function": config["DEFAULT_FUNCTION"], "args": [body]}, config)
    if request.mimetype == "multipart/form-data":
        return _from_form(request, config)
    raise APIError(
        415,
        "unsupported_media_type",
        "Send a JSON body (Content-Type: application/json) or multipart/form-data.",
    )


def read_submission(request: Request, config: dict[str, Any]) -> Submission:
    """Read a JSON or multipart body of one job into a Submission; raise APIError when it is not valid."""
    submission = read_enqueue(request, config)
    if isinstance(submission, list):
        raise APIError(422, "unexpected_batch", "Send one job here, not a batch.")
    return submission


def is_batch(body: Any) -> bool:
    """Tell whether a JSON body is a batch: an array with an object with a "function" in it, or [].

    An array of jobs with one mistyped item is a batch with an invalid item (422), not a seed
    job made of the whole array.
    """
    if not isinstance(body, list):
        return False
    return not body or any(isinstance(item, dict) and "function" in item for item in body)


def _batch(items: list[Any], config: dict[str, Any]) -> list[Submission]:
    if not items:
        raise APIError(422, "empty_batch", "The batch is empty: send at least one job.")
    limit = config["MAX_BATCH_SIZE"]
    if len(items) > limit:
        raise APIError(
            413,
            "batch_too_large",
            f"A batch holds at most {limit} jobs (MAX_BATCH_SIZE); this one has {len(items)}.",
            max_batch_size=limit,
        )
    submissions = []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict) or "function" not in item:
                raise APIError(
                    422, "invalid_batch_item", 'Each item of a batch is a job: an object with "function".'
                )
            submissions.append(_from_fields(item, config))
        except APIError as error:
            raise in_batch(error, index) from None
    _check_batch_ids(submissions)
    return submissions


def _check_batch_ids(submissions: list[Submission]) -> None:
    """Refuse a job_id given twice, and a depends_on on a job of the same batch (made in one go)."""
    first_of_id: dict[str, int] = {}
    for index, submission in enumerate(submissions):
        if submission.job_id is None:
            continue
        first = first_of_id.setdefault(submission.job_id, index)
        if first != index:
            raise in_batch(
                APIError(
                    422,
                    "duplicate_job_id",
                    f"job_id {submission.job_id!r} is item {first}'s too; each job needs its own id.",
                    job_id=submission.job_id,
                ),
                index,
            )
    for index, submission in enumerate(submissions):
        siblings = [job_id for job_id in submission.depends_on if job_id in first_of_id]
        if siblings:
            raise in_batch(
                APIError(
                    422,
                    "invalid_depends_on",
                    f"depends_on names {', '.join(siblings)} of the same batch; post the jobs it "
                    "waits for first, then the jobs that wait.",
                    job_ids=siblings,
                ),
                index,
            )


def in_batch(error: APIError, index: int) -> APIError:
    """Return the error of a batch's item, naming the item (0-based) in its message and `index`."""
    error.description = f"Batch item {index}: {error.description}"
    error.details["index"] = index
    return error


def _json_body(request: Request) -> Any:
    data = request.get_data(cache=True)
    if not data.strip():
        raise APIError(400, "empty_body", "The request body is empty; send a JSON document.")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise APIError(400, "invalid_json", f"The body is not valid JSON: {error}") from None


def _from_fields(body: dict[str, Any], config: dict[str, Any]) -> Submission:
    unknown = sorted(set(body) - BODY_KEYS)
    if unknown:
        raise APIError(
            422, "unknown_fields", f"Unknown field(s): {', '.join(unknown)}.", allowed=sorted(BODY_KEYS)
        )
    function = lookup(body["function"])
    args = body.get("args", [])
    kwargs = body.get("kwargs", {})
    if not isinstance(args, list):
        raise APIError(422, "invalid_arguments", "args must be a JSON array.")
    if not isinstance(kwargs, dict):
        raise APIError(422, "invalid_arguments", "kwargs must be a JSON object.")
    try:
        function.check_arguments(args, kwargs)
    except ArgumentsError as error:
        raise APIError(
            422, "invalid_arguments", f"{function.name}: {error}.", function=function.describe()
        ) from None
    submission = Submission(
        function=function,
        args=args,
        kwargs=kwargs,
        queue=_queue(body.get("queue", function.queue or config["DEFAULT_QUEUE"]), config),
        timeout=_bounded(
            "timeout",
            body.get("timeout", function.timeout or config["JOB_TIMEOUT"]),
            1,
            config["MAX_JOB_TIMEOUT"],
        ),
        result_ttl=_bounded(
            "result_ttl", body.get("result_ttl", config["RESULT_TTL"]), 0, config["MAX_RESULT_TTL"]
        ),
        ttl=_bounded("ttl", body["ttl"], 1, config["MAX_JOB_TTL"]) if body.get("ttl") is not None else None,
        failure_ttl=_bounded(
            "failure_ttl", body.get("failure_ttl", config["FAILURE_TTL"]), 1, config["MAX_FAILURE_TTL"]
        ),
        retry=_retry(body["retry"], config) if "retry" in body else function.retry,
        depends_on=_depends_on(body.get("depends_on", []), config),
        allow_failure=_allow_failure(body.get("allow_failure", False)),
        job_id=_job_id(body["job_id"]) if "job_id" in body else None,
    )
    _schedule(submission, body, config)
    _check_combinations(submission)
    return submission


def _from_form(request: Request, config: dict[str, Any]) -> Submission:
    form = request.form
    if "function" not in form:
        raise APIError(422, "missing_function", "A multipart body needs a 'function' field.")
    function = lookup(form["function"])
    body: dict[str, Any] = {"function": function.name}
    kwargs: dict[str, Any] = {}
    for name in form:
        raw = form[name]
        if name in FORM_FIELDS:
            body[name] = FORM_FIELDS[name](name, raw)
        else:
            try:
                kwargs[name] = function.coerce_form_value(name, raw)
            except ArgumentsError as error:
                raise APIError(422, "invalid_arguments", f"{function.name}: {error}.") from None
    file_parameters = function.file_parameters
    for name, upload in request.files.items():
        if name not in file_parameters:
            raise APIError(
                422,
                "unexpected_file",
                f"{function.name} takes no file named {name!r}.",
                file_parameters=file_parameters,
            )
        # The client's filename is never used as a path; it is only echoed, sanitised.
        kwargs[name] = FileData(
            data=upload.read(),
            content_type=upload.mimetype or "application/octet-stream",
            filename=secure_filename(upload.filename or "") or "upload",
        ).to_json()
    if kwargs:
        if not isinstance(body.setdefault("kwargs", {}), dict):
            raise APIError(422, "invalid_arguments", "kwargs must be a JSON object.")
        body["kwargs"] = {**body["kwargs"], **kwargs}
    return _from_fields(body, config)


def lookup(name: Any) -> JobFunction:
    """Return the registered function; 422 naming the available ones otherwise."""
    if not isinstance(name, str):
        raise APIError(422, "invalid_function", "function must be a string.", available=registry.names())
    try:
        return registry.get(name)
    except UnknownFunction:
        raise APIError(
            422, "unknown_function", f"No function named {name!r} is registered.", available=registry.names()
        ) from None


def _queue(name: Any, config: dict[str, Any]) -> str:
    if name not in config["QUEUES"]:
        raise APIError(
            422,
            "invalid_queue",
            f"queue must be one of {', '.join(config['QUEUES'])}.",
            queues=list(config["QUEUES"]),
        )
    return str(name)


def _bounded(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise APIError(422, f"invalid_{name}", f"{name} must be an integer from {low} to {high}.")
    return value


def _retry(value: Any, config: dict[str, Any]) -> RetryPolicy | None:
    if value is None:
        return None  # null turns off the function's default policy
    try:
        return RetryPolicy.from_json(value, config["MAX_RETRIES"], config["MAX_RETRY_INTERVAL"])
    except ValueError as error:
        raise APIError(422, "invalid_retry", f"{error}.") from None


def _depends_on(value: Any, config: dict[str, Any]) -> list[str]:
    limit = config["MAX_DEPENDENCIES"]
    if (
        not isinstance(value, list)
        or len(value) > limit
        or not all(isinstance(job_id, str) and JOB_ID.fullmatch(job_id) for job_id in value)
    ):
        raise APIError(422, "invalid_depends_on", f"depends_on must be a list of up to {limit} job ids.")
    return list(dict.fromkeys(value))


def _allow_failure(value: Any) -> bool:
    if not isinstance(value, bool):
        raise APIError(422, "invalid_allow_failure", "allow_failure must be true or false.")
    return value


def _job_id(value: Any) -> str:
    if not isinstance(value, str) or not JOB_ID.fullmatch(value):
        raise APIError(422, "invalid_job_id", "job_id must be 1-128 letters, digits, '-' or '_'.")
    return value


def _schedule(submission: Submission, body: dict[str, Any], config: dict[str, Any]) -> None:
    """Read `delay` or `at` into the submission, with the moment the job is due."""
    if "delay" in body and "at" in body:
        raise APIError(422, "invalid_schedule", "Send delay or at, not both.")
    now = datetime.now(UTC)
    latest = timedelta(seconds=config["MAX_DELAY"])
    if "delay" in body:
        delay = body["delay"]
        if (
            isinstance(delay, bool)
            or not isinstance(delay, int | float)
            or not 0 <= delay <= latest.total_seconds()
        ):
            raise APIError(
                422, "invalid_delay", f"delay must be a number of seconds from 0 to {config['MAX_DELAY']}."
            )
        submission.delay = float(delay)
        due = now + timedelta(seconds=delay)
    elif "at" in body:
        submission.at = due = _moment(body["at"])
        if due < now - PAST_TOLERANCE:
            raise APIError(422, "invalid_at", f"at is in the past ({now.isoformat()} now).")
        if due > now + latest:
            raise APIError(422, "invalid_at", f"at must be at most {config['MAX_DELAY']} seconds from now.")
    else:
        return
    if due > now:
        # Rounded up: RQ's scheduler stores whole seconds, and a job must not be due early.
        if due.microsecond:
            due = due.replace(microsecond=0) + timedelta(seconds=1)
        submission.scheduled_for = due


def _moment(value: Any) -> datetime:
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise APIError(
            422,
            "invalid_at",
            'at must be an ISO-8601 time with a zone, such as "2026-11-21T08:00:00Z" or "...+01:00".',
        )
    return moment.astimezone(UTC)


def _check_combinations(submission: Submission) -> None:
    """Refuse options that RQ would take but could not honour together."""
    if submission.allow_failure and not submission.depends_on:
        raise APIError(422, "invalid_allow_failure", "allow_failure applies to depends_on; send both.")
    if submission.depends_on and (submission.delay is not None or submission.at is not None):
        # RQ's scheduler enqueues a due job without looking at its dependencies.
        raise APIError(
            422, "invalid_schedule", "A job with depends_on runs when they finish; it cannot also be delayed."
        )
    due = submission.scheduled_for
    if submission.ttl is not None and due is not None:
        # RQ's ttl runs from the enqueue, and a scheduled job is enqueued (and saved) now.
        wait = math.ceil((due - datetime.now(UTC)).total_seconds())
        if submission.ttl <= wait:
            raise APIError(
                422,
                "invalid_ttl",
                f"ttl counts from now: a job due in {wait} seconds needs a longer ttl than that.",
            )


def _text(name: str, raw: str) -> str:
    return raw


def _json_field(name: str, raw: str) -> Any:
    code = "invalid_arguments" if name in ("args", "kwargs") else f"invalid_{name}"
    try:
        return json.loads(raw)
    except ValueError:
        raise APIError(422, code, f"The {name!r} form field must be JSON.") from None


def _int_field(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise APIError(422, f"invalid_{name}", f"{name} must be an integer.") from None


def _number_field(name: str, raw: str) -> float:
    try:
        number = float(raw)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise APIError(422, f"invalid_{name}", f"{name} must be a number.")
    return number


# How a multipart field of each option is read; every other field is one of the function's arguments.
FORM_FIELDS: dict[str, Callable[[str, str], Any]] = {
    "function": _text,
    "queue": _text,
    "at": _text,
    "job_id": _text,
    "args": _json_field,
    "kwargs": _json_field,
    "retry": _json_field,
    "depends_on": _json_field,
    "allow_failure": _json_field,
    "timeout": _int_field,
    "result_ttl": _int_field,
    "ttl": _int_field,
    "failure_ttl": _int_field,
    "delay": _number_field,
}
